//! Shard data between real `cairn` processes: writes, catch-up from several upstreams
//! with one killed half-way, a catching-up site killed and restarted, and writes on
//! both sides of a network cut (sites in network namespaces).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, EntryId, Plan, PlanId, PlanOrigin, SiteId, Step};
use cairn_tests::netns::Hosts;
use cairn_tests::{Client, SiteProc, SiteSpec, digest, free_port, new_cluster_dir, sorted, wait_for};

fn spec(root: &Path, cluster: &Path, name: &str, addr: SocketAddr, seeds: &[SocketAddr]) -> SiteSpec {
    let mut spec = SiteSpec::new(Path::new(env!("CARGO_BIN_EXE_cairn")), root, name, cluster, addr, seeds);
    // These tests place replicas by hand (extra replicas, a shard below its factor):
    // automation must not repair or rebalance them meanwhile.
    spec.extra = ["--auto-repair", "false", "--auto-rebalance", "false"].map(String::from).to_vec();
    spec
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The sites with a ready replica of `db`/0 in `view`.
fn ready_holders(view: &ClusterView, db: &str) -> Vec<SiteId> {
    let name = DbName::new(db).unwrap();
    view.db(&name)
        .and_then(|d| d.placement.first())
        .map(|s| s.replicas.iter().filter(|r| r.is_ready()).map(|r| r.site_id).collect())
        .unwrap_or_default()
}

fn replica_state(view: &ClusterView, db: &str, site: SiteId) -> Option<cairn_gossip::view::PlacementState> {
    let name = DbName::new(db).unwrap();
    let shard = view.db(&name)?.placement.first()?;
    shard.replicas.iter().find(|r| r.site_id == site).map(|r| r.state)
}

/// Entries `site`'s replica of `db`/0 has received while catching up, by `view`.
fn received(view: &ClusterView, db: &str, site: SiteId) -> Option<u64> {
    let name = DbName::new(db).unwrap();
    let shard = view.db(&name)?.placement.first()?;
    Some(shard.replicas.iter().find(|r| r.site_id == site)?.progress?.received_entries)
}

/// `n` sites on loopback seeded by the first, with catch-up slowed to 2 MiB/s so a test
/// can act half-way through one.
fn capped_sites(root: &Path, cluster: &Path, n: usize) -> (Vec<SocketAddr>, Vec<SiteProc>) {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| loopback()).collect();
    let procs = (0..n)
        .map(|i| {
            let mut s = spec(root, cluster, &format!("s{i}"), addrs[i], &addrs[..1]);
            s.extra.extend(["--catch-up-limit".into(), "2048".into()]);
            SiteProc::start(&s)
        })
        .collect();
    (addrs, procs)
}

fn add_replica(db: &str, upstreams: Vec<SiteId>) -> Plan {
    Plan {
        db: DbName::new(db).unwrap(),
        plan_id: PlanId(u128::from(std::process::id()) << 64 | u128::from(free_port())),
        priority: 100,
        origin: PlanOrigin::Operator { via: SiteId(1) },
        steps: vec![Step::AddReplica { shard: 0, upstreams }],
    }
}

fn messages(tag: &str, from: usize, n: usize, size: usize) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            let mut m = format!("{tag}-{i}-").into_bytes();
            m.resize(size, b'.');
            m
        })
        .collect()
}

/// Writes `n` messages at `at` in batches of 1000; the acknowledged ids.
async fn load(client: &Client, at: SocketAddr, db: &str, tag: &str, n: usize, size: usize) -> Vec<EntryId> {
    let mut ids = Vec::new();
    for start in (0..n).step_by(1000) {
        let batch = messages(tag, start, 1000.min(n - start), size);
        ids.extend(client.publish(at, db, 0, &batch).await.unwrap());
    }
    ids
}

/// Waits until every site in `sites` holds exactly the entries `acked` names (and no
/// other, no duplicates) and all hold the same content; answers the common digest.
async fn wait_identical(client: &Client, sites: &[SocketAddr], db: &str, acked: &BTreeSet<EntryId>) -> u64 {
    wait_for("replicas identical and holding every acknowledged write", Duration::from_secs(90), async || {
        let mut digests = BTreeSet::new();
        for at in sites {
            let (entries, dup) = sorted(client.read_all(*at, db, 0).await.ok()?);
            assert!(!dup, "{at} holds an entry twice");
            let ids: BTreeSet<EntryId> = entries.iter().map(|e| e.id).collect();
            if &ids != acked {
                return None;
            }
            digests.insert(digest(&entries));
        }
        (digests.len() == 1).then(|| *digests.first().unwrap())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_from_two_upstreams_finishes_from_one_when_the_other_dies() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let (addrs, mut procs) = capped_sites(root.path(), &cluster, 3);
    let client = Client::new(&cluster, addrs[0]);
    wait_for("three live sites", Duration::from_secs(30), async || {
        let v = client.view(addrs[0]).await.ok()?;
        (v.sites.iter().filter(|s| v.is_live(s.site_id)).count() == 3).then_some(())
    })
    .await;
    client.create_db(addrs[0], "t", 1, 2).await;
    let view = wait_for("the db placed on two sites", Duration::from_secs(30), async || {
        let v = client.view(addrs[0]).await.ok()?;
        (ready_holders(&v, "t").len() == 2).then_some(v)
    })
    .await;
    let holders = ready_holders(&view, "t");
    let index = |id: SiteId| procs.iter().position(|p| p.site_id == id.to_string()).unwrap();
    let (h1, h2) = (index(holders[0]), index(holders[1]));
    let new = (0..3).find(|i| *i != h1 && *i != h2).unwrap();
    let new_id: SiteId = procs[new].site_id.parse().unwrap();

    // 100,000 entries, half written at each holder.
    let mut acked: BTreeSet<EntryId> = BTreeSet::new();
    acked.extend(load(&client, addrs[h1], "t", "a", 50_000, 64).await);
    acked.extend(load(&client, addrs[h2], "t", "b", 50_000, 64).await);
    assert_eq!(acked.len(), 100_000);

    // Writes go on during the catch-up, at both holders while both live.
    let acked = Arc::new(Mutex::new(acked));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, cluster) = (acked.clone(), stop.clone(), cluster.clone());
        let targets = [addrs[h1], addrs[h2]];
        tokio::spawn(async move {
            let client = Client::new(&cluster, targets[0]);
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = targets[round % 2];
                if let Ok(ids) = client.publish(at, "t", 0, &messages("live", round * 10, 10, 64)).await {
                    acked.lock().unwrap().extend(ids);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client.close().await;
            round
        })
    };

    let plan = add_replica("t", vec![holders[0], holders[1]]);
    client.schedule(addrs[new], &plan).await;
    // Half-way (of the 2 × 100,000 entries the two upstreams send), kill one upstream.
    let started = Instant::now();
    wait_for("the catch-up half-way", Duration::from_secs(60), async || {
        let v = client.view(addrs[new]).await.ok()?;
        (received(&v, "t", new_id)? >= 80_000).then_some(())
    })
    .await;
    procs[h1].kill();
    eprintln!("upstream killed after {:?}", started.elapsed());
    // The new replica finishes from the other upstream, while the killed one stays down.
    wait_for("the new replica ready", Duration::from_secs(60), async || {
        let v = client.view(addrs[new]).await.ok()?;
        (replica_state(&v, "t", new_id) == Some(cairn_gossip::view::PlacementState::Ready)).then_some(())
    })
    .await;
    assert!(!procs[h1].running(), "ready before the killed upstream came back");
    eprintln!("new replica ready after {:?}", started.elapsed());

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 10, "writes went on during the catch-up ({rounds} rounds)");
    procs[h1].restart();
    let acked = acked.lock().unwrap().clone();
    let digest = wait_identical(&client, &addrs, "t", &acked).await;
    eprintln!("{} entries identical on 3 replicas (digest {digest:x})", acked.len());
    let status = client.status(addrs[new]).await.unwrap();
    assert_eq!(status.data.refused_batches, 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catching_up_site_killed_half_way_resumes_without_copying_twice() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let (addrs, mut procs) = capped_sites(root.path(), &cluster, 2);
    let client = Client::new(&cluster, addrs[0]);
    client.create_db(addrs[0], "k", 1, 1).await;
    let view = wait_for("the db placed", Duration::from_secs(30), async || {
        let v = client.view(addrs[0]).await.ok()?;
        (ready_holders(&v, "k").len() == 1 && v.sites.len() == 2).then_some(v)
    })
    .await;
    let holder_id = ready_holders(&view, "k")[0];
    let holder = procs.iter().position(|p| p.site_id == holder_id.to_string()).unwrap();
    let new = 1 - holder;
    let new_id: SiteId = procs[new].site_id.parse().unwrap();
    let acked: BTreeSet<EntryId> =
        load(&client, addrs[holder], "k", "k", 40_000, 200).await.into_iter().collect();

    client.schedule(addrs[new], &add_replica("k", vec![holder_id])).await;
    let v = wait_for("the catch-up 40 % done", Duration::from_secs(60), async || {
        let v = client.view(addrs[new]).await.ok()?;
        (received(&v, "k", new_id)? >= 16_000).then_some(v)
    })
    .await;
    // The plan's status says what it waits for.
    let plan =
        v.plans.iter().find(|p| p.site_id == new_id && p.db.as_str() == "k").expect("the plan in the view");
    assert_eq!(plan.status, "waiting: k/0 is catching up", "{plan:?}");
    procs[new].kill();
    procs[new].restart();
    wait_for("the new replica ready after the restart", Duration::from_secs(60), async || {
        let v = client.view(addrs[new]).await.ok()?;
        (replica_state(&v, "k", new_id) == Some(cairn_gossip::view::PlacementState::Ready)).then_some(())
    })
    .await;
    // What the restarted process received: only what the killed one had not stored.
    let data = client.status(addrs[new]).await.unwrap().data;
    assert_eq!(data.duplicates, 0, "nothing copied twice: {data:?}");
    assert!(data.entries < 40_000 - 10_000, "resumed rather than started over: {data:?}");
    wait_identical(&client, &addrs, "k", &acked).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_both_sides_of_a_network_cut_meet_after_healing() {
    let hosts = match Hosts::create("sd", 41, 2) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("SKIPPED: cannot make network namespaces here ({why}); run as root with iproute2");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs: Vec<SocketAddr> = (0..2).map(|i| SocketAddr::new(hosts.addr(i), 7000)).collect();
    let _procs: Vec<SiteProc> = (0..2)
        .map(|i| {
            let mut s = spec(root.path(), &cluster, &format!("s{i}"), addrs[i], &addrs[..1]);
            s.prefix = hosts.prefix(i);
            SiteProc::start(&s)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    wait_for("both sites live", Duration::from_secs(30), async || {
        let v = client.view(addrs[1]).await.ok()?;
        (v.sites.iter().filter(|s| v.is_live(s.site_id)).count() == 2).then_some(())
    })
    .await;
    client.create_db(addrs[0], "c", 1, 2).await;
    wait_for("the db on both sites", Duration::from_secs(30), async || {
        let v = client.view(addrs[0]).await.ok()?;
        (ready_holders(&v, "c").len() == 2).then_some(())
    })
    .await;
    let mut acked: BTreeSet<EntryId> = BTreeSet::new();
    acked.extend(load(&client, addrs[0], "c", "before", 1000, 100).await);
    wait_identical(&client, &addrs, "c", &acked).await;

    hosts.cut(0, 1).unwrap();
    let cut = Instant::now();
    acked.extend(load(&client, addrs[0], "c", "left", 2000, 100).await);
    acked.extend(load(&client, addrs[1], "c", "right", 2000, 100).await);
    // While cut, neither side has the other's writes.
    let left = client.read_all(addrs[0], "c", 0).await.unwrap();
    assert!(left.iter().all(|e| !e.payload.starts_with(b"right")), "a write crossed the cut");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed())).await;
    hosts.heal(0, 1).unwrap();
    let healed = Instant::now();
    wait_identical(&client, &addrs, "c", &acked).await;
    eprintln!("{} entries identical {:?} after healing", acked.len(), healed.elapsed());
    client.close().await;
}
