//! A rebalance between real `cairn` processes, watched throughout and interrupted: a
//! fourth site joins a three-site cluster holding data, automation rebalances onto it
//! (its catch-up slowed by `--catch-up-limit` so the plan takes seconds), and the new
//! site is SIGKILLed mid-plan and restarted. Sampled every 100 ms from the first view
//! of the plan to the end, no shard ever has fewer than 2 ready replicas; the plan
//! resumes where it stopped and completes balanced (6 replicas per site) with every
//! write on every replica.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, SiteId};
use cairn_tests::{
    Client, SiteProc, SiteSpec, digest, loopback_addrs, new_cluster_dir, sorted, wait_for, wait_live_sites,
};

const DB: &str = "crash";
const SHARDS: u32 = 12;
const PER_SHARD: usize = 100;

fn start(root: &Path, cluster: &Path, i: usize, addrs: &[SocketAddr], extra: &[&str]) -> SiteProc {
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let mut spec = SiteSpec::new(bin, root, &format!("s{i}"), cluster, addrs[i], &[addrs[0]]);
    spec.extra = extra.iter().map(|s| s.to_string()).collect();
    SiteProc::start(&spec)
}

/// Ready replicas per site, if every shard has exactly 2 replicas, both ready, on
/// distinct live sites, and no plan is running.
fn settled(view: &ClusterView) -> Option<BTreeMap<SiteId, usize>> {
    let db = view.db(&DbName::new(DB).unwrap())?;
    if !view.plans.is_empty() {
        return None;
    }
    let mut counts = BTreeMap::new();
    for shard in &db.placement {
        let sites: BTreeSet<SiteId> = shard.replicas.iter().map(|r| r.site_id).collect();
        let ok = shard.replicas.len() == 2
            && sites.len() == 2
            && shard.replicas.iter().all(|r| r.is_ready() && view.is_live(r.site_id));
        if !ok {
            return None;
        }
        for site in sites {
            *counts.entry(site).or_insert(0) += 1;
        }
    }
    Some(counts)
}

/// The fewest ready replicas any shard has in `view` (a replica on a site that is down
/// still counts: its copy is on disk; what must never happen is a handover deleting a
/// copy before its replacement is ready).
fn fewest_ready(view: &ClusterView) -> Option<usize> {
    let db = view.db(&DbName::new(DB).unwrap())?;
    db.placement.iter().map(|s| s.replicas.iter().filter(|r| r.is_ready()).count()).min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_survives_its_new_site_killed_mid_plan_and_never_leaves_a_shard_short() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let mut sites: Vec<SiteProc> = (0..3).map(|i| start(root.path(), &cluster, i, &addrs, &[])).collect();
    let client = Arc::new(Client::new(&cluster, addrs[0]));
    let limit = Duration::from_secs(90);
    wait_live_sites(&client, addrs[0], 3, limit).await;
    client.create_db(addrs[0], DB, SHARDS, 2).await;
    wait_for("the db placed", limit, async || settled(&client.view(addrs[0]).await.ok()?).map(|_| ())).await;
    let view = client.view(addrs[0]).await.unwrap();
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let at: SocketAddr = view.site(shard.replicas[0].site_id).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> = (0..PER_SHARD)
            .map(|i| format!("{}-{i}-{}", shard.shard, "x".repeat(1000)).into_bytes())
            .collect();
        client.publish(at, DB, shard.shard, &messages).await.unwrap();
    }

    // Watch every shard's ready replicas from now to the end.
    let done = Arc::new(AtomicBool::new(false));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (client, done, fewest, samples, at) =
            (client.clone(), done.clone(), fewest.clone(), samples.clone(), addrs[1]);
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(view) = client.view(at).await
                    && let Some(n) = fewest_ready(&view)
                {
                    fewest.fetch_min(n, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The fourth site joins, catching up at 100 KiB/s: each replica it takes (~100 KiB)
    // takes about a second to copy.
    sites.push(start(root.path(), &cluster, 3, &addrs, &["--catch-up-limit", "100"]));
    let newcomer: SiteId = sites[3].site_id.parse().unwrap();
    // Kill it once it holds a ready replica and its plan is still running.
    wait_for("the new site part-way through its plan", limit, async || {
        let view = client.view(addrs[1]).await.ok()?;
        let running = view.plans.iter().any(|p| p.site_id == newcomer);
        let db = view.db(&DbName::new(DB).unwrap())?;
        let holds = db
            .placement
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.site_id == newcomer && r.is_ready()))
            .count();
        (running && (1..6).contains(&holds)).then_some(())
    })
    .await;
    sites[3].kill();
    wait_for("the new site dead in the view", limit, async || {
        (!client.view(addrs[1]).await.ok()?.is_live(newcomer)).then_some(())
    })
    .await;
    sites[3].restart();

    let counts = wait_for("balanced after the restart", Duration::from_secs(120), async || {
        let counts = settled(&client.view(addrs[2]).await.ok()?)?;
        (counts.get(&newcomer) == Some(&6)).then_some(counts)
    })
    .await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(counts.values().all(|n| *n == 6), "{counts:?}");
    let (fewest, samples) = (fewest.load(Ordering::Relaxed), samples.load(Ordering::Relaxed));
    eprintln!("{samples} views sampled; fewest ready replicas of any shard: {fewest}");
    assert!(samples > 10, "the sampler saw too few views ({samples})");
    assert!(fewest >= 2, "a shard dropped to {fewest} ready replicas during the rebalance");

    // Every write on every replica.
    let view = client.view(addrs[2]).await.unwrap();
    let db = view.db(&DbName::new(DB).unwrap()).unwrap();
    for shard in &db.placement {
        let mut digests = BTreeSet::new();
        for r in &shard.replicas {
            let at: SocketAddr = view.site(r.site_id).unwrap().addr.parse().unwrap();
            let (entries, dup) = sorted(client.read_all(at, DB, shard.shard).await.unwrap());
            assert!(!dup && entries.len() == PER_SHARD, "shard {} on {}", shard.shard, r.site_id.short());
            digests.insert(digest(&entries));
        }
        assert_eq!(digests.len(), 1, "replicas of shard {} differ", shard.shard);
    }
}
