//! A hostile member against real `cairn start` processes: it holds a valid certificate
//! of the cluster, gossips out-of-range db settings (shards `u32::MAX`, replication 0),
//! a db created an hour in the future and a frontier beyond the highest seq, sends a
//! pull whose frontier lists two million origins, and floods the sites with stalled
//! pulls, reads and half-open handshakes. Through all of it: no site crashes,
//! automation still places a new db and repairs a killed site, every acknowledged write
//! is present, each bad value is an `invalid` warning in `cairn dump`, and every site's
//! anonymous memory stays under twice its peak at ordinary work before the flood
//! (replicated writes, catch-ups, reads).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_gossip::view::Warning;
use cairn_inventory::{DbName, EntryId, Hlc, SiteId, now_ms};
use cairn_tests::hostile::{HostileMember, RawReplica, raw_db, raw_value};
use cairn_tests::{
    Client, RssPeaks, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for,
};

const DB: &str = "events";

fn shards_at_factor(view: &ClusterView, db: &str, factor: usize) -> bool {
    view.db(&DbName::new(db).unwrap()).is_some_and(|d| {
        d.placement
            .iter()
            .all(|s| s.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count() == factor)
    }) && view.plans.iter().all(|p| p.db.as_str() != db)
}

async fn wait_at_factor(client: &Client, at: SocketAddr, db: &str, factor: usize, what: &str) -> ClusterView {
    wait_for(what, Duration::from_secs(90), async || {
        let view = client.view(at).await.ok()?;
        shards_at_factor(&view, db, factor).then_some(view)
    })
    .await
}

/// The `invalid` warnings of `cairn dump --format json` at `at` about `site`, by key.
fn dumped_invalid(cluster: &Path, at: SocketAddr, site: SiteId) -> BTreeMap<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dump", "--node", &at.to_string(), "--credentials"])
        .arg(cairn_tests::operator_dir(cluster))
        .args(["--format", "json"])
        .output()
        .expect("cairn dump runs");
    let Ok(view) = serde_json::from_slice::<ClusterView>(&out.stdout) else { return BTreeMap::new() };
    view.warnings
        .into_iter()
        .filter_map(|w| match w {
            Warning::Invalid { site_id, key, message } if site_id == site => Some((key, message)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_crashes_nothing_stops_no_automation_and_fills_no_memory() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let mut sites: Vec<SiteProc> = (0..4)
        .map(|i| {
            let mut spec = SiteSpec::new(bin, root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra = vec!["--lost-after-secs".into(), "3".into()];
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&client, addrs[0], 4, Duration::from_secs(60)).await;
    client.create_db(addrs[0], DB, 4, 2).await;
    let view = wait_at_factor(&client, addrs[0], DB, 2, "events placed").await;
    let mut acked: BTreeMap<u32, BTreeSet<EntryId>> = BTreeMap::new();
    let write = async |view: &ClusterView, tag: &str, acked: &mut BTreeMap<u32, BTreeSet<EntryId>>| {
        for shard in 0..4 {
            let holder =
                view.replicas(&DbName::new(DB).unwrap(), shard).iter().find(|r| r.is_ready()).unwrap();
            let at: SocketAddr = view.site(holder.site_id).unwrap().addr.parse().unwrap();
            let messages: Vec<Vec<u8>> =
                (0..200).map(|i| format!("{tag}-{shard}-{i}-{}", "p".repeat(1000)).into_bytes()).collect();
            acked.entry(shard).or_default().extend(client.publish(at, DB, shard, &messages).await.unwrap());
        }
    };
    // "Before" is a site at ordinary work, not one just started: a second db placed and
    // written, writes replicated between the sites, catch-ups of two more replicas of
    // every shard and the trims back, reads of every replica — its peak anonymous
    // memory through all of that.
    let pids: Vec<u32> = sites.iter().map(|s| s.pid().unwrap()).collect();
    let sampler = RssPeaks::start(&pids);
    // A second db of the default-ish shape (64 shards × 3): ~48 replicas per site, each
    // following the two others — the pull streams a working site serves.
    client.create_db(addrs[2], "wide", 64, 3).await;
    let wide = wait_at_factor(&client, addrs[0], "wide", 3, "wide placed").await;
    for shard in 0..64 {
        let holder = wide.replicas(&DbName::new("wide").unwrap(), shard)[0].site_id;
        let at: SocketAddr = wide.site(holder).unwrap().addr.parse().unwrap();
        let messages: Vec<Vec<u8>> =
            (0..50).map(|i| format!("w{shard}-{i}-{}", "q".repeat(500)).into_bytes()).collect();
        client.publish(at, "wide", shard, &messages).await.unwrap();
    }
    for round in 0..5 {
        write(&view, &format!("before{round}"), &mut acked).await;
    }
    let alter = |n: u32| cairn_transport::operator::DbChange::Alter {
        db: DbName::new(DB).unwrap(),
        replication: Some(cairn_inventory::Replication::new(n).unwrap()),
        retention: None,
    };
    client.change_db(addrs[0], &alter(4)).await.unwrap();
    wait_at_factor(&client, addrs[0], DB, 4, "events raised to 4").await;
    client.change_db(addrs[0], &alter(2)).await.unwrap();
    let view = wait_at_factor(&client, addrs[0], DB, 2, "events back at 2").await;
    for round in 5..10 {
        write(&view, &format!("before{round}"), &mut acked).await;
    }
    for shard in 0..4 {
        for r in view.replicas(&DbName::new(DB).unwrap(), shard) {
            let at: SocketAddr = view.site(r.site_id).unwrap().addr.parse().unwrap();
            let _ = client.read_all(at, DB, shard).await;
        }
    }
    let rss_before = sampler.stop();

    // The member: a site certificate of this very cluster.
    let ca = cairn_transport::ClusterCa::load(&cluster).unwrap();
    let issued = ca.issue(&cairn_transport::Identity::Replicant(SiteId::random()), 1).unwrap();
    let credentials = cairn_transport::Credentials::from_pem(ca.cert_pem(), &issued).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let hour_ahead = Hlc { wall_ms: now_ms() + 3_600_000, logical: 0 };
    let long_ago = Hlc { wall_ms: 1_000, logical: 0 };
    let events0 = cairn_gossip::summary::SummaryKey::Replica(DbName::new(DB).unwrap(), 0).render();
    let far_frontier = raw_value(&RawReplica {
        phase: cairn_gossip::summary::ReplicaPhase::Ready,
        entries: 1,
        bytes: 1,
        frontier_digest: 0,
        frontier: vec![(SiteId(7), u64::MAX)],
        progress: None,
    });
    let values = vec![
        ("db:huge".to_owned(), raw_db(u32::MAX, 2, long_ago, SiteId(9))),
        ("db:zero".to_owned(), raw_db(4, 0, long_ago, SiteId(9))),
        // An operator's real seal on a record an hour ahead: believed for its seal, not
        // for its clock.
        ("db:future".to_owned(), {
            let settings = cairn_inventory::DbSettings::new(4, 2, Default::default()).unwrap();
            let record = cairn_inventory::DbRecord::new(
                DbName::new("future").unwrap(),
                settings,
                hour_ahead,
                SiteId(9),
            );
            cairn_gossip::summary::encode_value(&cairn_gossip::summary::DbSummary::from(
                &cairn_tests::sealed(&cluster, record),
            ))
        }),
        (events0.clone(), far_frontier),
    ];
    let member = HostileMember::join(credentials, ca.cluster_id(), listen, &[addrs[1]], values).await;
    let bad_keys = ["db:huge", "db:zero", "db:future", events0.as_str()];
    let started = Instant::now();
    let flagged = wait_for(
        "every bad value an invalid warning in every site's dump",
        Duration::from_secs(30),
        async || {
            let mut seen = Vec::new();
            for at in &addrs {
                let invalid = dumped_invalid(&cluster, *at, member.site_id);
                if !bad_keys.iter().all(|k| invalid.contains_key(*k)) {
                    return None;
                }
                seen.push(invalid);
            }
            Some(seen)
        },
    )
    .await;
    eprintln!("hostile values flagged in every dump after {:?}: {:?}", started.elapsed(), flagged[0]);
    assert!(flagged[0]["db:huge"].contains("shards: 4294967295 is out of range"));
    assert!(flagged[0]["db:zero"].contains("replication: 0 is out of range"));
    assert!(flagged[0]["db:future"].contains("ahead of this site's clock"));
    assert!(flagged[0][&events0].contains("above the maximum"));

    // A pull whose frontier lists two million origins (a 12 MB frame): refused, named.
    let answer = member.pull_with_huge_frontier(addrs[3], DB, 2_000_000).await;
    assert!(answer.contains("Undecodable") && answer.contains("at most 16384 origins"), "{answer}");

    // The floods: stalled pulls at a holder of shard 0, reads at a holder of shard 1,
    // half-open handshakes at site 2.
    let holder = |shard: u32| -> SocketAddr {
        let r = &view.replicas(&DbName::new(DB).unwrap(), shard)[0];
        view.site(r.site_id).unwrap().addr.parse().unwrap()
    };
    let sampler = RssPeaks::start(&pids);
    let (pulls_opened, stalled) = member.open_stalled_pulls(holder(0), DB, 0, 600).await;
    // The read flood comes from an application's certificate (a member's may not read).
    let app = cairn_tests::issue_credentials(
        &cluster,
        &cairn_transport::Identity::Client(cairn_transport::PrincipalName::new("flood").unwrap()),
        &root.path().join("flood"),
    );
    let app = cairn_transport::Endpoint::client(
        &cairn_transport::Credentials::load(&app).unwrap(),
        cairn_transport::TransportConfig::default(),
        holder(1),
    )
    .unwrap();
    let (read_answers, read_busy, read_other) =
        cairn_tests::hostile::flood_reads(&app, holder(1), DB, 1, 600, 64).await;
    let handshakes = member.half_open_handshakes(addrs[2], 20, 50);
    eprintln!(
        "floods: {pulls_opened} stalled pulls opened; {read_answers} reads answered, {read_busy} busy, {read_other} \
         otherwise; {handshakes} half-open handshakes sent"
    );
    assert!(pulls_opened > 0 && read_answers > 0);

    // Through it, the cluster works: writes, a new db placed, a killed site repaired.
    let view = client.view(addrs[0]).await.unwrap();
    write(&view, "during", &mut acked).await;
    client.create_db(addrs[1], "during", 4, 2).await;
    wait_at_factor(&client, addrs[0], "during", 2, "a new db placed during the floods").await;
    let killed: SiteId = sites[3].site_id.parse().expect("a site id in the banner");
    sites[3].kill();
    let killed_at = Instant::now();
    let mut view = wait_for("events repaired after a site was killed", Duration::from_secs(90), async || {
        let view = client.view(addrs[0]).await.ok()?;
        (!view.is_live(killed) && shards_at_factor(&view, DB, 2)).then_some(view)
    })
    .await;
    eprintln!(
        "site 3 killed: every shard back at 2 ready replicas on live sites after {:?}",
        killed_at.elapsed()
    );
    // Every acknowledged write on every live replica (the killed site's are gone with it).
    for db in &mut view.dbs {
        for shard in &mut db.placement {
            shard.replicas.retain(|r| r.site_id != killed);
        }
    }
    let checked = cairn_tests::hosted::check_replicas(&client, &view, DB, &acked).await.unwrap();
    for (i, at) in addrs.iter().enumerate().take(3) {
        let status = client.status(*at).await.unwrap_or_else(|e| panic!("site {i} does not answer: {e}"));
        assert!(!status.site_id.to_string().is_empty());
    }
    let rss_peak = sampler.stop();
    drop(stalled);
    for i in 0..3 {
        eprintln!(
            "site {i}: RssAnon peak {} KiB at ordinary work, {} KiB through the floods",
            rss_before[i], rss_peak[i]
        );
        assert!(
            rss_peak[i] < 2 * rss_before[i],
            "site {i} grew from {} to {} KiB",
            rss_before[i],
            rss_peak[i]
        );
        // Refused handshakes are counted, not each logged.
        let refusals = sites[i].stderr().matches("refused a connection").count();
        assert!(refusals <= 10, "site {i} logged {refusals} refusals");
    }
    eprintln!("{checked} entries checked on every replica; every acknowledged write is there");
    member.leave().await;
    client.close().await;
}
