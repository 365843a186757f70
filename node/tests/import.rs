//! `cairn import`: a site whose data dir was lost while it was down comes back as
//! itself from a live peer's view, catches every shard it held up again, and ends with
//! the same content as the other replicas; importing again changes nothing; a malformed,
//! unknown-field or contradicting placement file is refused naming what is wrong, and
//! nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_inventory::{DbName, EntryId, SiteId};
use cairn_tests::hosted::{check_replicas, settled};
use cairn_tests::{Client, SiteProc, SiteSpec, loopback_addrs, new_cluster_dir, wait_for, wait_live_sites};

const DB: &str = "rec";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// Runs `cairn import` with `args`; answers whether it exited 0, its exit code, and its
/// output.
fn import(data_dir: &Path, cluster: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(["import", "--data-dir"])
        .arg(data_dir)
        .arg("--credentials")
        .arg(cairn_tests::operator_dir(cluster))
        .args(args)
        .output()
        .expect("cairn import runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// What `cairn inventory show --format json` prints for a stopped site.
fn show(data_dir: &Path) -> String {
    let out = Command::new(bin())
        .args(["inventory", "show", "--format", "json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("cairn inventory show runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_inventory_was_lost_is_rebuilt_from_a_peer_and_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let mut sites: Vec<SiteProc> = (0..3)
        .map(|i| {
            let mut spec =
                SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, addrs[i], &addrs[..1]);
            // No automation: the lost site's shards are not recovered elsewhere meanwhile.
            spec.extra = ["--auto-repair", "false", "--auto-rebalance", "false"].map(String::from).to_vec();
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    let limit = Duration::from_secs(60);
    wait_live_sites(&client, addrs[0], 3, limit).await;
    client.create_db(addrs[0], DB, 6, 2).await;
    let view = wait_for("the db placed", limit, async || {
        let view = client.view(addrs[0]).await.ok()?;
        settled(&view, DB, 2).then_some(view)
    })
    .await;
    let mut acked: BTreeMap<u32, BTreeSet<EntryId>> = BTreeMap::new();
    let d = view.db(&DbName::new(DB).unwrap()).unwrap();
    let lost: SiteId = sites[2].site_id.parse().unwrap();
    for shard in &d.placement {
        // Through the site to be lost where it holds the shard: its own entries must come
        // back to it from the others.
        let holder = shard.replicas.iter().find(|r| r.site_id == lost).unwrap_or(&shard.replicas[0]);
        let at = view.site(holder.site_id).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> =
            (0..300).map(|i| format!("{}-{i}-{}", shard.shard, "p".repeat(500)).into_bytes()).collect();
        acked
            .entry(shard.shard)
            .or_default()
            .extend(client.publish(at, DB, shard.shard, &messages).await.unwrap());
    }
    let held: BTreeSet<u32> = d
        .placement
        .iter()
        .filter(|s| s.replicas.iter().any(|r| r.site_id == lost))
        .map(|s| s.shard)
        .collect();
    assert!(!held.is_empty());

    // Every write replicated before the loss (a publish is acknowledged once stored on
    // the site that took it; what only the lost disk held is gone with it).
    wait_for("every write on both replicas before the loss", limit, async || {
        check_replicas(&client, &view, DB, &acked).await.ok()
    })
    .await;

    // Site 2 goes down and its data dir is lost.
    sites[2].kill();
    let data_dir = sites[2].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).unwrap();

    // Without --site, a lost inventory cannot be told apart from a new site.
    let (code, said) = import(&data_dir, &cluster, &["--from-cluster", &addrs[0].to_string()]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("--site"), "{said}");
    assert!(!data_dir.join("data.mdb").exists(), "a refused import made an inventory");

    let (code, said) =
        import(&data_dir, &cluster, &["--from-cluster", &addrs[0].to_string(), "--site", &lost.to_string()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("1 db records and {} replicas written", held.len())), "{said}");
    // Again: nothing new.
    let (code, said) =
        import(&data_dir, &cluster, &["--from-cluster", &addrs[0].to_string(), "--site", &lost.to_string()]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!(
            "0 db records and 0 replicas written ({} replicas already there)",
            held.len()
        )),
        "{said}"
    );

    // Its certificate went with the data dir: the operator issues it again (for the
    // rebuilt inventory's id), then it is back up as itself: every shard it held is ready
    // there again, with the same content.
    cairn_tests::issue_site_cert(bin(), &cluster, &data_dir, false);
    sites[2].restart();
    assert_eq!(sites[2].site_id, lost.to_string());
    let view = wait_for("every shard it held ready again", Duration::from_secs(90), async || {
        let view = client.view(addrs[0]).await.ok()?;
        let d = view.db(&DbName::new(DB).unwrap())?;
        let back = d
            .placement
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.site_id == lost && r.is_ready()))
            .count();
        (settled(&view, DB, 2) && back == held.len()).then_some(view)
    })
    .await;
    // (The rebuilt site has a new TLS key, so a connection the client held to its old
    // process is not reset at once: the first request may time out, as for any peer.)
    let checked = wait_for("every acknowledged write on every replica", limit, async || {
        check_replicas(&client, &view, DB, &acked).await.inspect_err(|e| eprintln!("not yet: {e}")).ok()
    })
    .await;
    eprintln!(
        "{} shards rebuilt on {}; {checked} entries identical on every replica",
        held.len(),
        lost.short()
    );

    // A dump file of the cluster: importing it into the rebuilt site changes nothing.
    let out = Command::new(bin())
        .args(["dump", "--format", "json", "--node", &addrs[0].to_string(), "--credentials"])
        .arg(cairn_tests::operator_dir(&cluster))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dump = String::from_utf8(out.stdout).unwrap();
    let file = root.path().join("placement.json");
    std::fs::write(&file, &dump).unwrap();
    sites[2].kill();
    let before = show(&data_dir);
    let (code, said) = import(&data_dir, &cluster, &["--from", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("0 db records and 0 replicas written"), "{said}");

    // Bad files: nothing written, the entry named.
    let bad = |name: &str, text: &str| {
        let path = root.path().join(name);
        std::fs::write(&path, text).unwrap();
        import(&data_dir, &cluster, &["--from", path.to_str().unwrap()])
    };
    let (code, said) = bad("garbage.json", "{ not json");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("garbage.json") && said.contains("not a cairn placement"), "{said}");
    let mut unknown: serde_json::Value = serde_json::from_str(&dump).unwrap();
    unknown["dbs"][0]["replicaton"] = serde_json::json!(3);
    let (code, said) = bad("unknown.json", &unknown.to_string());
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("unknown field `replicaton`"), "{said}");
    let mut other: serde_json::Value = serde_json::from_str(&dump).unwrap();
    other["dbs"][0]["created"]["wall_ms"] = serde_json::json!(1);
    let (code, said) = bad("other.json", &other.to_string());
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("db rec") && said.contains("another creation"), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    assert_eq!(show(&data_dir), before, "a refused import changed the inventory");
    client.close().await;
}
