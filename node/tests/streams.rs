//! The data plane end to end with real processes: a `ctl read --follow` reader of a
//! topic filter across 8 shards keeps every matching acknowledged write exactly once,
//! in each shard's order, while the site it reads from is SIGKILLed and a shard moves;
//! a writer that retries every write at another replica leaves no duplicate; the CLI's
//! publish/read contract (json lines, cursors, --since, --max, --shard, out of range).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_inventory::{DbName, SiteId};
use cairn_tests::hosted::settled;
use cairn_tests::streams::{Follower, message};
use cairn_tests::{
    Client, SiteProc, SiteSpec, ctl, loopback_addrs, new_cluster_dir, wait_for, wait_live_sites,
};
use cairn_transport::{Ack, PlanRequest, Request, Response};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

fn start_sites(root: &Path, cluster: &Path, addrs: &[SocketAddr]) -> Vec<SiteProc> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            SiteProc::start(&SiteSpec::new(bin(), root, &format!("s{i}"), cluster, *addr, &addrs[..1]))
        })
        .collect()
}

async fn placed(client: &Client, at: SocketAddr, db: &str, replication: usize) -> cairn_gossip::ClusterView {
    wait_for(&format!("{db} placed"), Duration::from_secs(60), async || {
        let view = client.view(at).await.ok()?;
        settled(&view, db, replication).then_some(view)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_every_matching_write_once_through_a_kill_and_a_move() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let mut sites = start_sites(root.path(), &cluster, &addrs);
    let client = Arc::new(Client::new(&cluster, addrs[1]));
    wait_live_sites(&client, addrs[1], 4, Duration::from_secs(60)).await;
    client.create_db(addrs[1], "feed", 8, 2).await;
    let view = placed(&client, addrs[1], "feed", 2).await;
    let routes = client.routes(addrs[1], "feed").await.unwrap();

    // The follower reads through site 0, which holds some shards (it reads them there).
    let mut follower = Follower::start(bin(), &cluster, addrs[0], "feed", &["--filter", "sensors/+/temp"]);

    // A writer: matching and other topics, keys spread over the shards; each write at a
    // holder, the next holder when one refuses. Only acknowledged writes count.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop, routes) = (client.clone(), stop.clone(), routes.clone());
        tokio::spawn(async move {
            let mut acked: BTreeMap<(u32, SiteId), Vec<u64>> = BTreeMap::new();
            let (mut n, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (topic, matching) = if n % 3 == 0 {
                    (format!("other/{n}"), false)
                } else {
                    (format!("sensors/{}/temp", n % 17), true)
                };
                let m = message(&topic, format!("m{n}"));
                let shard = routes.settings.routing.shard(&m.topic, None, 8);
                let holders = &routes.holders[shard as usize];
                let mut done = false;
                for k in 0..holders.len() {
                    let at = holders[(n as usize + k) % holders.len()];
                    if let Ok(ids) = client.write(at, "feed", shard, vec![m.clone()], None, Ack::Local).await
                    {
                        if matching {
                            acked.entry((shard, ids[0].id.origin)).or_default().push(ids[0].id.seq);
                        }
                        done = true;
                        break;
                    }
                }
                if !done {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, n, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A shard held by site 1 moves to a site that does not hold it.
    let (s1, s3) = (sites[1].site_id.parse::<SiteId>().unwrap(), sites[3].site_id.parse::<SiteId>().unwrap());
    let d = view.db(&DbName::new("feed").unwrap()).unwrap();
    let moved = d
        .placement
        .iter()
        .find(|p| p.replicas.iter().any(|r| r.site_id == s1) && p.replicas.iter().all(|r| r.site_id != s3))
        .map(|p| p.shard)
        .expect("a shard on site 1 and not on site 3");
    let request = PlanRequest::Move { db: DbName::new("feed").unwrap(), shard: moved, from: s1, to: s3 };
    let Response::PlanPreview(preview) =
        client.request(addrs[1], &Request::PlanPreview(request)).await.unwrap()
    else {
        panic!("no preview")
    };
    for plan in &preview.plans {
        let at: SocketAddr = plan.addr.parse().unwrap();
        assert!(matches!(client.schedule(at, &plan.plan).await, Response::Scheduled(_)));
    }
    wait_for("the move done", Duration::from_secs(60), async || {
        let v = client.view(addrs[1]).await.ok()?;
        let shard = &v.db(&DbName::new("feed").unwrap())?.placement[moved as usize];
        let on_3 = shard.replicas.iter().any(|r| r.site_id == s3 && r.is_ready());
        (on_3 && shard.replicas.iter().all(|r| r.site_id != s1)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The site the follower reads from dies.
    sites[0].kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, written, failed) = writer.await.unwrap();
    let want: usize = acked.values().map(Vec::len).sum();

    // Every matching acknowledged write reaches the follower, exactly once, in order.
    wait_for("the follower has every matching write", Duration::from_secs(60), async || {
        (follower.entries().len() >= want).then_some(())
    })
    .await;
    // A moment more, for any duplicate to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = follower.entries();
    assert!(follower.running(), "the follower stopped");
    let mut seen: BTreeMap<(u32, SiteId), Vec<u64>> = BTreeMap::new();
    for line in &lines {
        assert!(line["topic"].as_str().unwrap().starts_with("sensors/"), "{line}");
        let shard = line["shard"].as_u64().unwrap() as u32;
        let origin: SiteId = line["origin"].as_str().unwrap().parse().unwrap();
        seen.entry((shard, origin)).or_default().push(line["seq"].as_u64().unwrap());
    }
    for (key, seqs) in &seen {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key:?} out of order or repeated: {seqs:?}");
    }
    let got: BTreeSet<((u32, SiteId), u64)> =
        seen.iter().flat_map(|(k, seqs)| seqs.iter().map(move |s| (*k, *s))).collect();
    assert_eq!(got.len(), lines.len(), "an entry was delivered twice");
    for (key, seqs) in &acked {
        for seq in seqs {
            assert!(got.contains(&(*key, *seq)), "acknowledged {key:?} #{seq} never reached the follower");
        }
    }
    eprintln!(
        "follower: {} entries of {want} matching acknowledged writes ({written} written, {failed} not acknowledged), \
         shard {moved} moved, site 0 killed {:?} before the end",
        lines.len(),
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_retrying_every_write_at_another_replica_leaves_no_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let _sites = start_sites(root.path(), &cluster, &addrs);
    let client = Client::new(&cluster, addrs[0]);
    wait_live_sites(&client, addrs[0], 3, Duration::from_secs(60)).await;
    client.create_db(addrs[0], "once", 4, 3).await;
    placed(&client, addrs[0], "once", 3).await;
    let routes = client.routes(addrs[0], "once").await.unwrap();
    let (mut duplicates, mut raced) = (0, 0);
    for n in 0..200u64 {
        let m = message(&format!("orders/{}", n % 7), format!("order {n}"));
        let shard = routes.settings.routing.shard(&m.topic, None, 4);
        let holders = &routes.holders[shard as usize];
        // Half wait for every replica before the retry, half retry at once (a race).
        let ack = if n % 2 == 0 { Ack::All } else { Ack::Local };
        let first =
            client.write(holders[0], "once", shard, vec![m.clone()], Some(("app-1", n)), ack).await.unwrap();
        let again = client.write(holders[1], "once", shard, vec![m], Some(("app-1", n)), ack).await.unwrap();
        if again[0].duplicate {
            assert_eq!(again[0].id, first[0].id, "a duplicate is answered with the original id");
            duplicates += 1;
        } else {
            assert_eq!(ack, Ack::Local, "after an ack from every replica, a retry anywhere is a duplicate");
            raced += 1;
        }
    }
    // Every replica of every shard, read from the start, shows each message once.
    wait_for("one copy of each message on every replica", Duration::from_secs(30), async || {
        for shard in 0..4u32 {
            for at in &routes.holders[shard as usize] {
                let (entries, _) = client.fetch_all(*at, "once", shard, "#").await.ok()?;
                let payloads: BTreeSet<_> = entries.iter().map(|e| e.payload.clone()).collect();
                if payloads.len() != entries.len() {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    let mut total = 0;
    for shard in 0..4u32 {
        total +=
            client.fetch_all(routes.holders[shard as usize][2], "once", shard, "#").await.unwrap().0.len();
    }
    assert_eq!(total, 200);
    eprintln!(
        "200 writes each retried at another replica: {duplicates} answered as duplicates, {raced} raced (stored twice, read once)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_by_topic_and_reads_with_cursors_filters_and_limits() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(2);
    let _sites = start_sites(root.path(), &cluster, &addrs);
    let client = Client::new(&cluster, addrs[0]);
    wait_live_sites(&client, addrs[0], 2, Duration::from_secs(60)).await;
    client.create_db(addrs[0], "cli", 4, 2).await;
    placed(&client, addrs[0], "cli", 2).await;
    let run = |args: &[&str]| ctl(bin(), &cluster, addrs[1], args);
    let (ok, out) = run(&["publish", "cli", "--topic", "a/b", "one", "two", "--format", "json"]);
    assert!(ok, "{out}");
    let published: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(published["ids"].as_array().unwrap().len(), 2, "{out}");
    let (ok, out) = run(&["publish", "cli", "--topic", "c", "--key", "k", "--ack", "all", "three"]);
    assert!(ok && out.contains("published 1 message(s)"), "{out}");
    let (ok, out) = run(&[
        "publish",
        "cli",
        "--topic",
        "c",
        "--producer",
        "p",
        "--producer-seq",
        "5",
        "x",
        "--format",
        "json",
    ]);
    assert!(ok && !out.contains("duplicate"), "{out}");
    let (ok, out) = run(&[
        "publish",
        "cli",
        "--topic",
        "c",
        "--producer",
        "p",
        "--producer-seq",
        "5",
        "x",
        "--format",
        "json",
    ]);
    assert!(ok && out.contains("\"duplicate\":true"), "{out}");
    let (ok, out) = run(&["publish", "cli", "--shard", "3", "legacy"]);
    assert!(ok && out.contains("cli/3"), "{out}");

    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    };
    let (ok, out) = run(&["read", "cli", "--format", "json"]);
    assert!(ok, "{out}");
    let all = lines(&out);
    assert_eq!(all.len(), 6, "5 entries then the cursor line: {out}");
    let last = all.last().unwrap();
    assert!(last["cursor"].as_str().unwrap().starts_with("c1.") && last["sites"].is_array(), "{last}");
    for field in ["topic", "key", "ts_ms", "shard", "origin", "seq", "message"] {
        assert!(all[0].get(field).is_some(), "{field} missing from {}", all[0]);
    }
    let cursor = last["cursor"].as_str().unwrap().to_owned();
    // Filters: one level, the rest, and an exact topic.
    let (_, out) = run(&["read", "cli", "--filter", "a/+"]);
    assert_eq!(out, "one\ntwo\n");
    let (_, out) = run(&["read", "cli", "--filter", "#", "--max", "2", "--format", "json"]);
    assert_eq!(lines(&out).len(), 3, "--max counts entries over every shard: {out}");
    let (_, out) = run(&["read", "cli", "--filter", ""]);
    assert_eq!(out, "legacy\n", "entries written without a topic read as topic \"\"");
    // From the cursor, on the other site: only what is new.
    let (ok, _) = run(&["publish", "cli", "--topic", "a/b", "four"]);
    assert!(ok);
    let (ok, out) = ctl(bin(), &cluster, addrs[0], &["read", "cli", "--from", &cursor]);
    assert!(ok && out == "four\n", "{out}");
    // --since in the future finds nothing; a bad cursor and a bad filter are refused.
    let (ok, out) = run(&["read", "cli", "--since", "2999-01-01T00:00:00Z"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out) = run(&["read", "cli", "--from", "c1.garbage"]);
    assert!(!ok && out.contains("not a cursor"), "{out}");
    let (ok, out) = run(&["read", "cli", "--filter", "a/#/b"]);
    assert!(!ok && out.contains("'#' must be the whole last level"), "{out}");
    let (ok, out) = run(&["publish", "cli", "--topic", "a/+", "x"]);
    assert!(!ok && out.contains("wildcards belong in filters"), "{out}");
    // A read that waits: answered as soon as a write lands.
    let waiting = std::thread::spawn({
        let cluster = cluster.clone();
        let node = addrs[0];
        move || {
            let started = Instant::now();
            let (ok, out) = ctl(
                bin(),
                &cluster,
                node,
                &["read", "cli", "--from", &cursor, "--filter", "late", "--wait-ms", "8000"],
            );
            (ok, out, started.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(run(&["publish", "cli", "--topic", "late", "now"]).0);
    let (ok, out, took) = waiting.join().unwrap();
    assert!(ok && out == "now\n" && took < Duration::from_secs(7), "{out} after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_grants_no_credit_is_paused_and_resumes_when_it_does() {
    use cairn_inventory::{FetchStart, TopicFilter};
    use cairn_transport::{SubscribeRequest, SubscriptionFrame};
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(1);
    let _sites = start_sites(root.path(), &cluster, &addrs);
    let client = Client::new(&cluster, addrs[0]);
    wait_live_sites(&client, addrs[0], 1, Duration::from_secs(60)).await;
    client.create_db(addrs[0], "credit", 1, 1).await;
    placed(&client, addrs[0], "credit", 1).await;
    let batch: Vec<_> = (0..50).map(|i| message("c/a", format!("m{i}"))).collect();
    client.write(addrs[0], "credit", 0, batch, None, Ack::Local).await.unwrap();
    let request = SubscribeRequest {
        db: DbName::new("credit").unwrap(),
        shard: 0,
        start: FetchStart::Earliest,
        filter: TopicFilter::new("c/+").unwrap(),
        since_ms: None,
        credit: 10,
    };
    let mut subscription = client.subscribe(addrs[0], &request).await.unwrap();
    let mut got = Vec::new();
    let mut idles = 0;
    // Without more credit: 10 entries, then only idle frames (the site sends one every 2 s).
    while idles < 2 {
        match subscription.next_within(Duration::from_secs(8)).await.unwrap().unwrap() {
            SubscriptionFrame::Entries { entries, .. } => got.extend(entries),
            SubscriptionFrame::Idle { .. } => idles += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got.len(), 10, "the site sent beyond the credit");
    // New writes while paused are not sent either; credit brings them in order.
    let more: Vec<_> = (50..60).map(|i| message("c/b", format!("m{i}"))).collect();
    client.write(addrs[0], "credit", 0, more, None, Ack::Local).await.unwrap();
    subscription.credit(1000).await.unwrap();
    while got.len() < 60 {
        if let SubscriptionFrame::Entries { entries, .. } =
            subscription.next_within(Duration::from_secs(8)).await.unwrap().unwrap()
        {
            got.extend(entries);
        }
    }
    let payloads: Vec<String> = got.iter().map(|e| String::from_utf8(e.payload.clone()).unwrap()).collect();
    let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, want);
}
