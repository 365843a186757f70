//! Automation end to end, between real `cairn` processes: a site is SIGKILLed and, once
//! it has been dead for `--lost-after-secs`, its shards are recovered on the other sites
//! from the surviving copies; it comes back and the shards it still holds are trimmed
//! back to the replication factor; a new site joins and replicas are rebalanced onto it.
//! Every acknowledged write reaches every replica at each stage.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, SiteId};
use cairn_tests::{
    Client, SiteProc, SiteSpec, digest, loopback_addrs, new_cluster_dir, sorted, wait_for, wait_live_sites,
};

const DB: &str = "auto";
const SHARDS: u32 = 8;
const FACTOR: usize = 2;

fn start(root: &Path, cluster: &Path, i: usize, addr: SocketAddr, seed: SocketAddr) -> SiteProc {
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let mut spec = SiteSpec::new(bin, root, &format!("s{i}"), cluster, addr, &[seed]);
    spec.extra = ["--lost-after-secs", "2"].map(String::from).to_vec();
    SiteProc::start(&spec)
}

/// Ready replicas per live site, when every shard has exactly `FACTOR` replicas, all
/// ready, on distinct live sites, and no plan is running.
fn settled(view: &ClusterView) -> Option<BTreeMap<SiteId, usize>> {
    let db = view.db(&DbName::new(DB).unwrap())?;
    if !view.plans.is_empty() {
        return None;
    }
    let mut counts: BTreeMap<SiteId, usize> =
        view.sites.iter().filter(|s| view.is_live(s.site_id)).map(|s| (s.site_id, 0)).collect();
    for shard in &db.placement {
        let live: Vec<_> = shard.replicas.iter().filter(|r| view.is_live(r.site_id)).collect();
        if live.len() != FACTOR || live.iter().any(|r| !r.is_ready()) {
            return None;
        }
        for r in live {
            *counts.get_mut(&r.site_id)? += 1;
        }
    }
    Some(counts)
}

/// Whether every live replica of every shard holds exactly `written[shard]` entries,
/// the same ones (a replica may still be receiving them: callers wait).
async fn same_content(client: &Client, view: &ClusterView, written: &[usize]) -> bool {
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let mut digests = Vec::new();
        for r in shard.replicas.iter().filter(|r| view.is_live(r.site_id)) {
            let addr: SocketAddr = view.site(r.site_id).unwrap().addr.parse().unwrap();
            let entries = match client.read_all(addr, DB, shard.shard).await {
                Ok(entries) => entries,
                Err(error) => {
                    eprintln!("shard {} on {}: {error}", shard.shard, r.site_id.short());
                    return false;
                }
            };
            let (entries, dup) = sorted(entries);
            assert!(!dup, "shard {} has a duplicate on {}", shard.shard, r.site_id.short());
            if entries.len() != written[shard.shard as usize] {
                eprintln!(
                    "shard {} on {} ({}): {} of {} entries",
                    shard.shard,
                    r.site_id.short(),
                    r.state,
                    entries.len(),
                    written[shard.shard as usize]
                );
                return false;
            }
            digests.push(digest(&entries));
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "shard {} differs", shard.shard);
    }
    true
}

/// Waits until [`same_content`] holds in `at`'s current view.
async fn wait_content(client: &Client, at: SocketAddr, written: &[usize], when: &str) {
    wait_for(&format!("every replica holding every write ({when})"), Duration::from_secs(30), async || {
        let view = client.view(at).await.ok()?;
        settled(&view)?;
        same_content(client, &view, written).await.then_some(())
    })
    .await;
}

async fn write_everywhere(client: &Client, view: &ClusterView, written: &mut [usize], tag: &str) {
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let holder = shard.replicas.iter().find(|r| r.is_ready() && view.is_live(r.site_id)).unwrap();
        let at: SocketAddr = view.site(holder.site_id).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> =
            (0..20).map(|i| format!("{tag}-{}-{i}", shard.shard).into_bytes()).collect();
        client.publish(at, DB, shard.shard, &messages).await.unwrap();
        written[shard.shard as usize] += messages.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_site_recovered_then_trimmed_and_a_join_rebalanced() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(5);
    let mut sites: Vec<SiteProc> =
        (0..4).map(|i| start(root.path(), &cluster, i, addrs[i], addrs[0])).collect();
    let client = Client::new(&cluster, addrs[0]);
    let limit = Duration::from_secs(90);
    wait_live_sites(&client, addrs[0], 4, limit).await;
    client.create_db(addrs[0], DB, SHARDS, FACTOR as u32).await;
    let view = wait_for("the db placed", limit, async || {
        let view = client.view(addrs[0]).await.ok()?;
        settled(&view).map(|_| view)
    })
    .await;
    let mut written = vec![0; SHARDS as usize];
    write_everywhere(&client, &view, &mut written, "before").await;
    // A write acknowledged by one replica survives that replica's loss once it has
    // reached the others: let it.
    wait_content(&client, addrs[1], &written, "before the kill").await;

    // Site 3 dies for good (as far as the others can tell).
    let victim: SiteId = sites[3].site_id.parse().unwrap();
    sites[3].kill();
    let (view, counts) = wait_for("shards of the lost site recovered", limit, async || {
        let view = client.view(addrs[1]).await.ok()?;
        if view.is_live(victim) {
            return None;
        }
        settled(&view).map(|c| (view, c))
    })
    .await;
    assert!(!counts.contains_key(&victim));
    wait_content(&client, addrs[1], &written, "after recovery").await;
    write_everywhere(&client, &view, &mut written, "while-lost").await;

    // It comes back with its old replicas: the extras are trimmed, nothing is lost.
    sites[3].restart();
    wait_for("extras trimmed after the comeback", limit, async || {
        let view = client.view(addrs[1]).await.ok()?;
        if !view.is_live(victim) {
            return None;
        }
        settled(&view).map(|_| ())
    })
    .await;
    wait_content(&client, addrs[1], &written, "after the trim").await;

    // A fifth site joins: replicas are rebalanced onto it, ±1.
    sites.push(start(root.path(), &cluster, 4, addrs[4], addrs[0]));
    let newcomer: SiteId = sites[4].site_id.parse().unwrap();
    let counts = wait_for("rebalanced onto the new site", limit, async || {
        let counts = settled(&client.view(addrs[2]).await.ok()?)?;
        let (min, max) = (counts.values().min()?, counts.values().max()?);
        (counts.get(&newcomer).is_some_and(|n| *n > 0) && max - min <= 1).then_some(counts)
    })
    .await;
    assert_eq!(counts.values().sum::<usize>(), SHARDS as usize * FACTOR);
    wait_content(&client, addrs[1], &written, "after the rebalance").await;
    client.close().await;
}
