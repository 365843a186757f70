//! `cairn-client` against real `cairn start` processes, with an application's
//! certificate: its routes follow a replica move; a quorum producer keeps every
//! acknowledged message through a SIGKILL of a site it writes to (retrying unknown
//! outcomes without duplicates); a subscriber that runs through it all receives every
//! acknowledged message exactly once, and a second one resumed from a saved cursor gets
//! exactly what came after; the crate builds without LMDB or chitchat.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_client::{
    Ack, Client, ClientConfig, Cursor, Delivered, Message, ProducerOptions, PublishOptions, SubscribeOptions,
    Topic,
};
use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, EntryId, SiteId};
use cairn_tests::hosted::check_replicas;
use cairn_tests::{SiteProc, SiteSpec, loopback_addrs, new_cluster_dir, wait_for};
use cairn_transport::{Identity, PrincipalName};

const DB: &str = "orders";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// Every shard at `factor` ready replicas on live sites, no plan running.
fn settled(view: &ClusterView, factor: usize) -> bool {
    view.plans.is_empty()
        && view.db(&DbName::new(DB).unwrap()).is_some_and(|d| {
            d.placement.iter().all(|s| {
                s.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count() == factor
            })
        })
}

/// Takes entries from `subscription` until `want` distinct ids came or `limit` passed.
async fn take_until(
    subscription: &mut cairn_client::Subscription,
    got: &mut Vec<Delivered>,
    want: &BTreeSet<(u32, EntryId)>,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let have: BTreeSet<(u32, EntryId)> = got.iter().map(|d| (d.shard, d.entry.id)).collect();
        if want.is_subset(&have) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the subscriber has {} of {} acknowledged entries", have.len(), want.len());
        match tokio::time::timeout(left, subscription.next()).await {
            Ok(Some(Ok(delivered))) => got.push(delivered),
            Ok(Some(Err(error))) => panic!("subscription failed: {error}"),
            Ok(None) => panic!("subscription ended"),
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_moves_and_kills_without_losing_or_repeating() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let mut sites: Vec<SiteProc> = (0..3)
        .map(|i| {
            let mut spec =
                SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra =
                vec!["--lost-after-secs".into(), "3".into(), "--auto-rebalance".into(), "false".into()];
            SiteProc::start(&spec)
        })
        .collect();
    let operator = cairn_tests::Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&operator, addrs[0], 3, Duration::from_secs(60)).await;
    operator.create_db(addrs[0], DB, 4, 2).await;
    let limit = Duration::from_secs(60);
    let placed = wait_for("orders placed", limit, async || {
        let view = operator.view(addrs[0]).await.ok()?;
        settled(&view, 2).then_some(view)
    })
    .await;
    let app = cairn_tests::issue_credentials(
        &cluster,
        &Identity::Client(PrincipalName::new("app").unwrap()),
        &root.path().join("app"),
    );
    let client = Client::connect(&app, ClientConfig::new(addrs.iter().copied())).unwrap();
    let db: DbName = DB.parse().unwrap();
    let name = DbName::new(DB).unwrap();
    let addr_of =
        |view: &ClusterView, id: SiteId| -> SocketAddr { view.site(id).unwrap().addr.parse().unwrap() };

    // 1. Routes follow a move: shard 0 moved by the operator from a holder to the site
    //    without it; the client's next publish to shard 0 lands on the new holder.
    let routes = client.routes(&db).await.unwrap();
    assert_eq!(routes.holders[0].len(), 2, "{routes:?}");
    let holders: BTreeSet<SiteId> = placed.replicas(&name, 0).iter().map(|r| r.site_id).collect();
    let (from, to) = {
        let from = *holders.iter().next().unwrap();
        let to = placed.sites.iter().map(|s| s.site_id).find(|s| !holders.contains(s)).unwrap();
        (from, to)
    };
    let (ok, said) = cairn_tests::ctl(
        bin(),
        &cluster,
        addrs[0],
        &["plan", "apply", "move", DB, "0", "--from", &from.to_string(), "--to", &to.to_string()],
    );
    assert!(ok, "{said}");
    let moved = wait_for("shard 0 moved", limit, async || {
        let view = operator.view(addrs[0]).await.ok()?;
        let now: BTreeSet<SiteId> = view.replicas(&name, 0).iter().map(|r| r.site_id).collect();
        (settled(&view, 2) && now.contains(&to) && !now.contains(&from)).then_some(view)
    })
    .await;
    let options = PublishOptions { shard: Some(0), ..Default::default() };
    let message = Message::new(Topic::new("moved/0").unwrap(), "after the move");
    let published = client.publish(&db, vec![message], &options).await.unwrap();
    let new_holders: Vec<SocketAddr> =
        moved.replicas(&name, 0).iter().map(|r| addr_of(&moved, r.site_id)).collect();
    assert!(published.sites.iter().all(|s| new_holders.contains(s)), "{published:?} vs {new_holders:?}");
    let routes = wait_for("the client's routes show the move", limit, async || {
        let routes = client.routes(&db).await.ok()?;
        routes.holders[0].contains(&addr_of(&moved, to)).then_some(routes)
    })
    .await;
    assert!(!routes.holders[0].contains(&addr_of(&moved, from)), "{routes:?}");
    eprintln!("routes followed the move of shard 0 from {} to {}", from.short(), to.short());

    // 2. A subscriber from the start, and a quorum producer that writes through a SIGKILL
    //    of the site holding the most shards.
    let mut subscription =
        client.subscribe(&db, Cursor::default(), &SubscribeOptions::default()).await.unwrap();
    let producer =
        client.producer(db.clone(), ProducerOptions { ack: Ack::Quorum, ..Default::default() }).unwrap();
    let victim = {
        let mut held: BTreeMap<SiteId, usize> = BTreeMap::new();
        for shard in &moved.db(&name).unwrap().placement {
            for r in &shard.replicas {
                *held.entry(r.site_id).or_default() += 1;
            }
        }
        held.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    };
    let victim_index = addrs.iter().position(|a| *a == addr_of(&moved, victim)).unwrap();
    const N: usize = 3000;
    let mut acks = Vec::new();
    let started = Instant::now();
    for i in 0..N {
        if i == N / 3 {
            sites[victim_index].kill();
            eprintln!("site {} SIGKILLed after {i} sends", victim.short());
        }
        let message = Message::new(Topic::new(format!("orders/{}", i % 8)).unwrap(), format!("order {i}"));
        acks.push(producer.send(message).await.unwrap());
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut acked: BTreeMap<u32, BTreeSet<EntryId>> = BTreeMap::new();
    let mut duplicates = 0;
    for ack in acks {
        let shard = ack.shard();
        let stored = ack.await.expect("every message is acknowledged, through the kill");
        duplicates += usize::from(stored.duplicate);
        acked.entry(shard).or_default().insert(stored.id);
    }
    let total: usize = acked.values().map(BTreeSet::len).sum();
    assert_eq!(total, N, "{N} messages, {total} distinct ids");
    eprintln!(
        "{N} messages acknowledged (quorum) through the kill in {:?}; {duplicates} retried after an unknown outcome \
         and answered as already stored",
        started.elapsed()
    );
    let view = wait_for("repaired to 2 replicas a shard", Duration::from_secs(120), async || {
        let view = operator.view(addrs[(victim_index + 1) % 3]).await.ok()?;
        settled(&view, 2).then_some(view)
    })
    .await;
    // The killed site's replicas stay in the view (it is dead, not gone): check the live.
    let mut live = view.clone();
    for db in &mut live.dbs {
        for shard in &mut db.placement {
            shard.replicas.retain(|r| view.is_live(r.site_id));
        }
    }
    let checked = check_replicas(&operator, &live, DB, &acked).await.unwrap();
    eprintln!("every acknowledged message on every replica: {checked} entries checked");

    // 3. The subscriber got every acknowledged message exactly once (and the one of the
    //    move), riding over the kill.
    let want: BTreeSet<(u32, EntryId)> =
        acked.iter().flat_map(|(shard, ids)| ids.iter().map(move |id| (*shard, *id))).collect();
    let mut got = Vec::new();
    take_until(&mut subscription, &mut got, &want, Duration::from_secs(60)).await;
    let distinct: BTreeSet<(u32, EntryId)> = got.iter().map(|d| (d.shard, d.entry.id)).collect();
    assert_eq!(distinct.len(), got.len(), "an entry was delivered twice");
    let payloads: BTreeSet<&[u8]> = got.iter().map(|d| &d.entry.payload[..]).collect();
    eprintln!(
        "subscriber: {} entries, each once ({} distinct payloads; the rest are copies a retry raced)",
        got.len(),
        payloads.len()
    );

    // 4. Resumed from a saved cursor on a new client: exactly what came after.
    let saved = subscription.cursor().clone();
    drop(subscription);
    let later: Vec<Message> =
        (0..50).map(|i| Message::new(Topic::new("orders/late").unwrap(), format!("late {i}"))).collect();
    let mut late_ids = BTreeSet::new();
    for message in later {
        let ack = producer.send(message).await.unwrap();
        let shard = ack.shard();
        late_ids.insert((shard, ack.await.unwrap().id));
    }
    producer.close().await;
    let again = Client::connect(&app, ClientConfig::new(addrs.iter().copied())).unwrap();
    let mut resumed = again.subscribe(&db, saved, &SubscribeOptions::default()).await.unwrap();
    let mut after = Vec::new();
    take_until(&mut resumed, &mut after, &late_ids, Duration::from_secs(30)).await;
    let seen: BTreeSet<(u32, EntryId)> = after.iter().map(|d| (d.shard, d.entry.id)).collect();
    assert_eq!(seen, late_ids, "resumed from the cursor: only what came after, each once");
    assert_eq!(after.len(), late_ids.len());
    again.close().await;
    client.close().await;
    drop(sites);
}

#[test]
fn the_client_crate_builds_without_a_storage_engine_or_gossip() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-p", "cairn-client", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("cairn-transport") && tree.contains("quinn"), "{tree}");
    for banned in ["heed", "lmdb-master-sys", "chitchat", "cairn-inventory", "cairn-gossip"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} "))),
            "cairn-client depends on {banned}"
        );
    }
}

#[test]
fn ctl_timeout_bounds_the_whole_command() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let nobody = loopback_addrs(1)[0].to_string();
    for args in [&["publish", "x", "hi"][..], &["read", "x"]] {
        let started = Instant::now();
        let out = std::process::Command::new(bin())
            .args(["ctl", "--node", &nobody, "--timeout", "2", "--credentials"])
            .arg(cairn_tests::operator_dir(&cluster))
            .args(args)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(took < Duration::from_millis(3500), "{args:?} took {took:?} with --timeout 2");
    }
}
