//! Gossip a member can only sign for itself, against real `cairn start` processes: two
//! members holding valid *site* certificates of the cluster gossip (1) a summary under
//! another site's id with a fake ready, fully covering replica of a shard that site
//! does not hold, (2) a drop tombstone of a live db that no operator sealed, and (3) an
//! unsigned claim of a ready replica, and a member says it is draining with no operator's
//! order. No view adopts any of it, no replica is deleted or
//! moved, every acknowledged write stays on every replica, and each forgery is a
//! `forged` warning in every site's dump.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_gossip::summary::{ReplicaPhase, SITE_KEY, SummaryKey, encode_value};
use cairn_gossip::view::Warning;
use cairn_gossip::{ClusterView, GossipName};
use cairn_inventory::{DbName, EntryId, Hlc, Retention, SiteId, now_ms};
use cairn_tests::hosted::check_replicas;
use cairn_tests::hostile::{HostileMember, RawDb, RawReplica, raw_value};
use cairn_tests::{Client, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for};
use cairn_transport::{ClusterCa, Credentials, Identity};

const DB: &str = "events";

/// Per site id, the `forged` warnings' keys.
fn forged(view: &ClusterView) -> BTreeSet<(SiteId, String)> {
    view.warnings
        .iter()
        .filter_map(|w| match w {
            Warning::Forged { site_id, key, .. } => Some((*site_id, key.clone())),
            _ => None,
        })
        .collect()
}

/// Shard → the sites holding a ready replica, as `view` has it.
fn placement(view: &ClusterView) -> BTreeMap<u32, BTreeSet<SiteId>> {
    let name = DbName::new(DB).unwrap();
    (0..4)
        .map(|shard| {
            let holders = view.replicas(&name, shard).iter().filter(|r| r.is_ready()).map(|r| r.site_id);
            (shard, holders.collect())
        })
        .collect()
}

fn member_credentials(ca: &ClusterCa, id: SiteId) -> Credentials {
    Credentials::from_pem(ca.cert_pem(), &ca.issue(&Identity::Site(id), 1).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_summaries_replicas_and_drops_are_flagged_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    // The members below hold valid core certificates, so they are real (if empty) sites:
    // rebalancing would rightly move shards onto them. It is off; repair and trims, what
    // a forged replica or drop would set off, stay on.
    let sites: Vec<SiteProc> = (0..3)
        .map(|i| {
            let mut spec = SiteSpec::new(bin, root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra = vec!["--auto-rebalance".into(), "false".into()];
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&client, addrs[0], 3, Duration::from_secs(60)).await;
    client.create_db(addrs[0], DB, 4, 2).await;
    let name = DbName::new(DB).unwrap();
    let placed = wait_for("events placed, 2 ready replicas a shard", Duration::from_secs(60), async || {
        let view = client.view(addrs[0]).await.ok()?;
        let done = placement(&view).values().all(|h| h.len() == 2) && view.plans.is_empty();
        done.then_some(view)
    })
    .await;
    let mut acked: BTreeMap<u32, BTreeSet<EntryId>> = BTreeMap::new();
    for shard in 0..4 {
        let holder = placed.replicas(&name, shard)[0].site_id;
        let at: SocketAddr = placed.site(holder).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> = (0..100).map(|i| format!("m{shard}-{i}").into_bytes()).collect();
        acked.entry(shard).or_default().extend(client.publish(at, DB, shard, &messages).await.unwrap());
    }
    let before = placement(&placed);

    // The victim: a real site, and a shard it does not hold.
    let victim = placed.sites[2].site_id;
    let victim_addr = placed.site(victim).unwrap().addr.clone();
    let (&shard, _) = before.iter().find(|(_, holders)| !holders.contains(&victim)).unwrap();
    let covering = placed.replicas(&name, shard)[0].frontier.0.iter().map(|(o, s)| (*o, s + 1_000)).collect();
    let fake_ready = raw_value(&RawReplica {
        phase: ReplicaPhase::Ready,
        entries: 1_000_000,
        bytes: 1 << 30,
        frontier_digest: 0,
        frontier: covering,
        progress: None,
    });
    let replica_key = SummaryKey::Replica(name.clone(), shard).render();

    let ca = ClusterCa::load(&cluster).unwrap();
    // (1) Under the victim's id, with a higher generation than the victim's own process.
    let impostor = HostileMember::join_as(
        member_credentials(&ca, SiteId::random()),
        ca.cluster_id(),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        &[addrs[1]],
        victim,
        vec![(replica_key.clone(), fake_ready.clone())],
    )
    .await;
    // (2) and (3): under its own id, a drop of the live db no operator sealed, and a claim
    // of a ready replica carrying no signature at all.
    let tombstone = {
        let created = placed.db(&name).unwrap().created;
        raw_value(&RawDb {
            shards: 4,
            replication: 2,
            retention: Retention::default(),
            routing: 0,
            created,
            origin: placed.db(&name).unwrap().origin,
            changed: Hlc { wall_ms: now_ms(), logical: 0 },
            dropped: true,
            supersedes: None,
            seal: None,
        })
    };
    let db_key = SummaryKey::Db(name.clone()).render();
    let dropper = HostileMember::join(
        member_credentials(&ca, SiteId::random()),
        ca.cluster_id(),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        &[addrs[2]],
        vec![(db_key.clone(), tombstone)],
    )
    .await;
    dropper.set_raw(&replica_key, &fake_ready).await;
    // (4) A member that says it is draining (so planners would empty it) with no order.
    let drainer = HostileMember::join(
        member_credentials(&ca, SiteId::random()),
        ca.cluster_id(),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        &[addrs[0]],
        Vec::new(),
    )
    .await;
    let mut summary = drainer.summary();
    summary.draining = true;
    drainer.set(SITE_KEY, &encode_value(&summary)).await;

    let expected: BTreeSet<(SiteId, String)> = [
        // A node whose certificate is not believed is known by its gossip name alone.
        (GossipName::of(victim).partial_site_id(), "*".to_owned()),
        (dropper.site_id, db_key.clone()),
        (dropper.site_id, replica_key.clone()),
        (drainer.site_id, "*".to_owned()),
    ]
    .into();
    let started = Instant::now();
    wait_for("every forgery a forged warning in every site's view", Duration::from_secs(30), async || {
        for at in &addrs {
            let view = client.view(*at).await.ok()?;
            if !expected.is_subset(&forged(&view)) {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("4 forgeries flagged in every view after {:?}", started.elapsed());

    // Long enough for automation to have acted on any of it (a trim, a drop, a repair).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for at in &addrs {
        let view = client.view(*at).await.unwrap();
        assert!(view.db(&name).is_some(), "{at}: the db was dropped by an unsealed tombstone");
        assert_eq!(placement(&view), before, "{at}: placement changed");
        assert!(view.plans.is_empty(), "{at}: a plan runs: {:?}", view.plans);
        let impostor_seen = view.site(victim).unwrap();
        assert_eq!(impostor_seen.addr, victim_addr, "{at}: the victim's summary was replaced");
        assert!(view.site(dropper.site_id).is_some(), "the dropper itself is a verified member");
        assert!(view.site(drainer.site_id).is_none(), "{at}: a site draining on no order is believed");
        assert!(
            view.replicas(&name, shard).iter().all(|r| r.site_id != victim && r.site_id != dropper.site_id),
            "{at}: a forged replica is in the placement"
        );
    }
    let view = client.view(addrs[0]).await.unwrap();
    let checked = check_replicas(&client, &view, DB, &acked).await.unwrap();
    eprintln!("every acknowledged write on every replica: {checked} entries checked");
    drop(impostor);
    drop(dropper);
    drop(drainer);
    drop(sites);
}
