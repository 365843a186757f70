//! Changing a db's replication factor and dropping it, end to end between real `cairn`
//! processes driven by the `cairn ctl` commands: the factor goes 2 → 3 (every shard gets
//! a third ready replica holding every write), then 3 → 1 (extras handed over, every
//! write still readable), then the db is dropped (every site deletes its replicas and
//! data, publishes are refused) and created again under the same name, empty.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::DbName;
use cairn_tests::{Client, SiteProc, SiteSpec, digest, loopback_addrs, new_cluster_dir, sorted, wait_for};

const DB: &str = "shifting";
const SHARDS: u32 = 6;

fn ctl(cluster: &Path, node: SocketAddr, args: &[&str]) -> (bool, String) {
    cairn_tests::ctl(Path::new(env!("CARGO_BIN_EXE_cairn")), cluster, node, args)
}

/// Whether every shard has exactly `factor` replicas, all ready on distinct live sites,
/// the db's factor says `factor`, and no plan is running.
fn settled(view: &ClusterView, factor: usize) -> bool {
    let Some(db) = view.db(&DbName::new(DB).unwrap()) else { return false };
    view.plans.is_empty()
        && db.replication() as usize == factor
        && db.placement.iter().all(|s| {
            let sites: BTreeSet<_> = s.replicas.iter().map(|r| r.site_id).collect();
            s.replicas.len() == factor
                && sites.len() == factor
                && s.replicas.iter().all(|r| r.is_ready() && view.is_live(r.site_id))
        })
}

/// Every replica of every shard holds exactly the `written` entries of its shard.
async fn all_replicas_hold(client: &Client, view: &ClusterView, written: &[usize]) -> bool {
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let mut digests = BTreeSet::new();
        for r in &shard.replicas {
            let addr: SocketAddr = view.site(r.site_id).unwrap().addr.parse().unwrap();
            let Ok(entries) = client.read_all(addr, DB, shard.shard).await else { return false };
            let (entries, dup) = sorted(entries);
            assert!(!dup, "a duplicate in shard {}", shard.shard);
            if entries.len() != written[shard.shard as usize] {
                return false;
            }
            digests.insert(digest(&entries));
        }
        assert_eq!(digests.len(), 1, "replicas of shard {} differ", shard.shard);
    }
    true
}

async fn settle(
    client: &Client,
    at: SocketAddr,
    factor: usize,
    written: &[usize],
    what: &str,
) -> ClusterView {
    wait_for(what, Duration::from_secs(60), async || {
        let view = client.view(at).await.ok()?;
        (settled(&view, factor) && all_replicas_hold(client, &view, written).await).then_some(view)
    })
    .await
}

async fn write(client: &Client, view: &ClusterView, written: &mut [usize], tag: &str) {
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let holder = &shard.replicas[0];
        let at: SocketAddr = view.site(holder.site_id).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> =
            (0..10).map(|i| format!("{tag}-{}-{i}", shard.shard).into_bytes()).collect();
        client.publish(at, DB, shard.shard, &messages).await.unwrap();
        written[shard.shard as usize] += messages.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_raised_then_lowered_then_the_db_dropped_and_created_again() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let _sites: Vec<SiteProc> = (0..4)
        .map(|i| {
            SiteProc::start(&SiteSpec::new(
                bin,
                root.path(),
                &format!("s{i}"),
                &cluster,
                addrs[i],
                &[addrs[0]],
            ))
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&client, addrs[0], 4, Duration::from_secs(60)).await;
    let (ok, out) = ctl(&cluster, addrs[1], &["db", "create", DB, "--shards", "6", "--replication", "2"]);
    assert!(ok, "{out}");
    let mut written = vec![0; SHARDS as usize];
    let view = settle(&client, addrs[0], 2, &written, "placed at 2").await;
    write(&client, &view, &mut written, "at2").await;

    // Usage: a change needs something to change, and a factor in range.
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "set", DB]);
    assert!(!ok && out.contains("--replication"), "{out}");
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "set", DB, "--replication", "17"]);
    assert!(!ok && out.contains("replication") && out.contains("1..=16"), "{out}");
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "set", "nosuchdb", "--replication", "2"]);
    assert!(!ok && out.contains("unknown db nosuchdb"), "{out}");

    // 2 → 3, through a site holding no record of the db's change.
    let (ok, out) = ctl(&cluster, addrs[2], &["db", "set", DB, "--replication", "3"]);
    assert!(ok && out.contains("changed"), "{out}");
    let view = settle(&client, addrs[3], 3, &written, "raised to 3, every write on every replica").await;
    write(&client, &view, &mut written, "at3").await;
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "set", DB, "--replication", "3"]);
    assert!(ok && out.contains("already"), "{out}");

    // 3 → 1: extras handed over; every write still there.
    let (ok, out) = ctl(&cluster, addrs[3], &["db", "set", DB, "--replication", "1"]);
    assert!(ok, "{out}");
    let view = settle(&client, addrs[1], 1, &written, "lowered to 1").await;
    write(&client, &view, &mut written, "at1").await;
    settle(&client, addrs[1], 1, &written, "writes at 1").await;

    // Drop: needs --yes; then every site deletes its replicas; publishing is refused.
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "drop", DB]);
    assert!(!ok && out.contains("--yes"), "{out}");
    let (ok, out) = ctl(&cluster, addrs[0], &["db", "drop", DB, "--yes"]);
    assert!(ok && out.contains("dropped"), "{out}");
    wait_for("the drop everywhere", Duration::from_secs(30), async || {
        for at in &addrs {
            let view = client.view(*at).await.ok()?;
            if view.db(&DbName::new(DB).unwrap()).is_some() || view.dropped.is_empty() {
                return None;
            }
            if view.sites.iter().any(|s| s.replicas > 0) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (ok, out) = ctl(&cluster, addrs[2], &["publish", DB, "--shard", "0", "gone?"]);
    assert!(!ok && out.contains(DB), "{out}");
    let (ok, out) = ctl(&cluster, addrs[2], &["db", "drop", DB, "--yes"]);
    assert!(ok && out.contains("already dropped"), "{out}");

    // Created again under the same name: a new, empty db.
    let (ok, out) = ctl(&cluster, addrs[3], &["db", "create", DB, "--shards", "6", "--replication", "2"]);
    assert!(ok, "{out}");
    let written = vec![0; SHARDS as usize];
    let view = settle(&client, addrs[0], 2, &written, "created again, empty").await;
    assert_eq!(view.dropped.len(), 1);
    client.close().await;
}
