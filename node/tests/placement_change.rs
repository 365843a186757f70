//! Operator placement changes end to end, between real `cairn` processes and through
//! the real CLI: a fourth site joins a three-site cluster holding data, `ctl plan
//! preview rebalance` shows the fewest moves without changing anything, `ctl plan apply
//! rebalance` balances it (`plan simulate` on a saved dump agrees with the preview);
//! then `ctl plan apply decommission` empties a site; then one replica is moved by hand
//! (refused onto a draining site, done once `ctl drain --off` lifts the mark). After each,
//! every shard has its full set of ready replicas on distinct sites, with identical
//! content.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, SiteId};
use cairn_tests::{
    Client, SiteProc, SiteSpec, digest, loopback_addrs, new_cluster_dir, sorted, wait_for, wait_live_sites,
};

const DB: &str = "moves";
const SHARDS: u32 = 12;
const PER_SHARD: usize = 40;

fn start(root: &Path, cluster: &Path, i: usize, addr: SocketAddr, seed: SocketAddr) -> SiteProc {
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let mut spec = SiteSpec::new(bin, root, &format!("s{i}"), cluster, addr, &[seed]);
    // The operator decides here: automation must not rebalance before the preview.
    spec.extra = ["--auto-rebalance", "false"].map(String::from).to_vec();
    SiteProc::start(&spec)
}

fn ctl(cluster: &Path, node: SocketAddr, args: &[&str]) -> (bool, String) {
    cairn_tests::ctl(Path::new(env!("CARGO_BIN_EXE_cairn")), cluster, node, args)
}

/// Ready replicas per live site, if every shard has exactly 2 ready replicas on distinct
/// sites and no plan is running; else `None`.
fn settled(view: &ClusterView) -> Option<BTreeMap<SiteId, u32>> {
    let db = view.db(&DbName::new(DB).unwrap())?;
    if !view.plans.is_empty() || db.placement.len() != SHARDS as usize {
        return None;
    }
    let mut counts: BTreeMap<SiteId, u32> =
        view.sites.iter().filter(|s| view.is_live(s.site_id)).map(|s| (s.site_id, 0)).collect();
    for shard in &db.placement {
        let ready: Vec<SiteId> = shard.replicas.iter().filter(|r| r.is_ready()).map(|r| r.site_id).collect();
        if ready.len() != 2 || shard.replicas.len() != 2 || ready[0] == ready[1] {
            return None;
        }
        for site in ready {
            *counts.get_mut(&site)? += 1;
        }
    }
    Some(counts)
}

/// Every shard's ready replicas hold the same `PER_SHARD` entries.
async fn same_content(client: &Client, view: &ClusterView) {
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let mut digests = Vec::new();
        for r in &shard.replicas {
            let addr: SocketAddr = view.site(r.site_id).unwrap().addr.parse().unwrap();
            let (entries, dup) = sorted(client.read_all(addr, DB, shard.shard).await.unwrap());
            assert!(!dup, "shard {} has a duplicate on {}", shard.shard, r.site_id.short());
            assert_eq!(entries.len(), PER_SHARD, "shard {} on {}", shard.shard, r.site_id.short());
            digests.push(digest(&entries));
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "shard {} differs between replicas", shard.shard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_after_a_join_then_decommission() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let mut sites: Vec<SiteProc> =
        (0..3).map(|i| start(root.path(), &cluster, i, addrs[i], addrs[0])).collect();
    let client = Client::new(&cluster, addrs[0]);
    let limit = Duration::from_secs(60);
    wait_live_sites(&client, addrs[0], 3, limit).await;
    client.create_db(addrs[0], DB, SHARDS, 2).await;
    // `ctl wait db` returns once every shard has its ready replicas (plain lines: not a terminal).
    let (ok, out) = ctl(&cluster, addrs[1], &["wait", "db", DB, "--timeout", "60"]);
    assert!(ok && out.contains(&format!("db {DB} ready: {SHARDS}/{SHARDS}")), "{out}");
    let (ok, out) = ctl(&cluster, addrs[1], &["wait", "db", "nosuch", "--timeout", "1"]);
    assert!(!ok && out.contains("timed out after 1 s waiting for db nosuch ready"), "{out}");
    let view = wait_for("the db placed", limit, async || {
        let view = client.view(addrs[0]).await.ok()?;
        settled(&view).map(|_| view)
    })
    .await;
    // Data in every shard, written at one of its replicas.
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let at: SocketAddr = view.site(shard.replicas[0].site_id).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> =
            (0..PER_SHARD).map(|i| format!("{}-{i}", shard.shard).into_bytes()).collect();
        client.publish(at, DB, shard.shard, &messages).await.unwrap();
    }

    // A fourth site joins. Nothing moves until asked.
    sites.push(start(root.path(), &cluster, 3, addrs[3], addrs[0]));
    let newcomer = sites[3].site_id.parse::<SiteId>().unwrap();
    wait_for("the fourth site live", limit, async || {
        client.view(addrs[0]).await.ok()?.is_live(newcomer).then_some(())
    })
    .await;
    let (ok, preview) = ctl(&cluster, addrs[1], &["plan", "preview", "rebalance", "--format", "json"]);
    assert!(ok, "{preview}");
    let preview: serde_json::Value = serde_json::from_str(&preview).unwrap();
    // 24 replicas on 4 sites: 6 each, so 2 leave each old site: 6 moves, the fewest.
    assert_eq!(preview["replicas_moving"], 6, "{preview:#}");
    assert!(preview["bytes_moving"].as_u64().unwrap() > 0, "{preview:#}");
    assert_eq!(preview["applied"], false);
    let (ok, table) = ctl(&cluster, addrs[1], &["plan", "preview", "rebalance"]);
    assert!(ok && table.contains("6 replicas would move"), "{table}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = client.view(addrs[3]).await.unwrap();
    assert!(view.plans.is_empty(), "a preview changed something: {:?}", view.plans);

    // The same planner offline, against a saved dump, gives the same moves and plans.
    let dump = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dump", "--node", &addrs[1].to_string(), "--credentials"])
        .arg(cairn_tests::operator_dir(&cluster))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let saved = root.path().join("view.json");
    std::fs::write(&saved, &dump.stdout).unwrap();
    let simulate = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["plan", "simulate", "--dump", file.to_str().unwrap(), "rebalance", "--format", "json"])
            .output()
            .unwrap()
    };
    let simulated = simulate(&saved);
    assert!(simulated.status.success(), "{}", String::from_utf8_lossy(&simulated.stderr));
    let simulated: serde_json::Value = serde_json::from_slice(&simulated.stdout).unwrap();
    assert_eq!(simulated["moves"], preview["moves"]);
    let ids = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["plans"].as_array().unwrap().iter().map(|p| p["plan"]["plan_id"].clone()).collect()
    };
    assert_eq!(ids(&simulated), ids(&preview));
    let garbage = root.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"sites\": 3}").unwrap();
    let refused = simulate(&garbage);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && text.contains("not a `cairn dump --format json` view"), "{text}");

    let (ok, applied) = ctl(&cluster, addrs[1], &["plan", "apply", "rebalance"]);
    assert!(ok, "{applied}");
    assert!(applied.contains("delivered"), "{applied}");
    let (ok, out) = ctl(&cluster, addrs[1], &["wait", "plan", DB, "--timeout", "120"]);
    assert!(ok, "{out}");
    let (view, counts) = wait_for("balanced after the rebalance", Duration::from_secs(120), async || {
        let view = client.view(addrs[2]).await.ok()?;
        let counts = settled(&view)?;
        (counts.get(&newcomer) == Some(&6)).then_some((view, counts))
    })
    .await;
    assert!(counts.values().all(|n| *n == 6), "{counts:?}");
    let (ok, out) = ctl(&cluster, addrs[2], &["db", "list", "--format", "json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], DB);
    assert_eq!(list[0]["shards_ready"], SHARDS);
    same_content(&client, &view).await;

    // Decommission the first site, named by its address.
    let leaving = sites[0].site_id.parse::<SiteId>().unwrap();
    let (ok, out) = ctl(&cluster, addrs[2], &["plan", "apply", "decommission", &addrs[0].to_string()]);
    assert!(ok, "{out}");
    let (view, counts) = wait_for("the first site emptied", Duration::from_secs(120), async || {
        let view = client.view(addrs[2]).await.ok()?;
        let counts = settled(&view)?;
        (counts.get(&leaving) == Some(&0)).then_some((view, counts))
    })
    .await;
    let others: Vec<u32> = counts.iter().filter(|(s, _)| **s != leaving).map(|(_, n)| *n).collect();
    assert_eq!(others, vec![8, 8, 8], "{counts:?}");
    same_content(&client, &view).await;

    // One replica moved by hand: not onto a draining site; once the drain is lifted, yes.
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    let holder = db.placement[3].replicas[0].site_id.to_string();
    let leaving_addr = addrs[0].to_string();
    let moving = ["plan", "apply", "move", DB, "3", "--from", &holder, "--to", &leaving_addr];
    let (ok, out) = ctl(&cluster, addrs[2], &moving);
    assert!(!ok && out.contains("is draining"), "{out}");
    let (ok, out) = ctl(&cluster, addrs[0], &["drain", "--off"]);
    assert!(ok && out.contains("not draining"), "{out}");
    wait_for("the drain lifted in the view", limit, async || {
        let view = client.view(addrs[2]).await.ok()?;
        (!view.site(leaving)?.draining).then_some(())
    })
    .await;
    let (ok, out) = ctl(&cluster, addrs[2], &moving);
    assert!(ok && out.contains("1 replicas would move"), "{out}");
    let view = wait_for("the replica moved", Duration::from_secs(120), async || {
        let view = client.view(addrs[2]).await.ok()?;
        settled(&view)?;
        let shard = &view.db(&DbName::new(DB).unwrap())?.placement[3];
        shard.replicas.iter().any(|r| r.site_id == leaving).then_some(view)
    })
    .await;
    same_content(&client, &view).await;
    // The same move back and forth: each time a new plan that runs, not one a site
    // already ran (which it would answer as ended, moving nothing).
    let holder_id = db.placement[3].replicas[0].site_id;
    let back = ["plan", "apply", "move", DB, "3", "--from", &leaving_addr, "--to", &holder];
    for (args, onto, off) in
        [(&back, holder_id, leaving), (&moving, leaving, holder_id), (&back, holder_id, leaving)]
    {
        let (ok, out) = ctl(&cluster, addrs[2], args);
        assert!(ok && out.contains("1 replicas would move"), "{out}");
        wait_for("the replica moved again", Duration::from_secs(120), async || {
            let view = client.view(addrs[2]).await.ok()?;
            settled(&view)?;
            let shard = &view.db(&DbName::new(DB).unwrap())?.placement[3];
            let on = |site| shard.replicas.iter().any(|r| r.site_id == site);
            (on(onto) && !on(off)).then_some(())
        })
        .await;
    }
    let (ok, out) = ctl(&cluster, addrs[2], &["plan", "show"]);
    assert!(ok && out.contains("no plan in flight"), "{out}");
    let (ok, out) = ctl(&cluster, addrs[2], &["plan", "cancel", DB]);
    assert!(ok && out.contains("no plan of moves is running"), "{out}");

    // A site that is not there is refused with its name.
    let (ok, out) = ctl(&cluster, addrs[2], &["plan", "preview", "decommission", "ffffffff"]);
    assert!(!ok && out.contains("no site matches"), "{out}");
    client.close().await;
}
