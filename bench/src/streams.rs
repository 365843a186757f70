//! `streams`: the data plane — writes by topic, reads by filter, latencies.
//!
//! Three sites in this process on loopback, each with a ready replica of one shard
//! (replication 3), as in [`crate::publish`].
//!
//! - Publish by topic: 4 clients write batches of 100 messages (256 bytes, topics
//!   `t/0` … `t/999`), `--ack local` and `quorum`, for a set time. Baseline: raw LMDB
//!   durable commits of the same batches (raw heed, one writer), same run. Aim for
//!   local: ≥ 0.8.
//! - Reads: the shard filled with entries over 1,000 topics; a whole-db read, reads of
//!   single topics (each through the topic index), and a `t/+` filter, page by page over
//!   the network; entries/s. Baseline: a raw LMDB scan of as many entries. Aim: the
//!   one-topic read delivers its entries at ≥ 0.5× the whole-db read's per-entry rate.
//! - Latency: one writer, one message per request, local and quorum, median; baseline:
//!   one hop (a request round trip plus one single-entry durable commit), same run.
//!   Aims: local ≤ 1.5× (ratio hop/ours ≥ 0.67), quorum ≤ 2.5× (≥ 0.4).
//! - Publish to subscriber: a subscription at another site; from the write's send to
//!   the frame's arrival, median and p99.
//! - Where the time goes: the local publish rate and the single-message latency again,
//!   to a db whose one replica is site 0's (no followers committing on the shared disk).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_inventory::{DbName, FetchStart, Message, Topic, TopicFilter};
use cairn_transport::{
    Ack, Credentials, Endpoint, FetchRequest, Request, Response, SubscribeRequest, SubscriptionFrame,
    WriteRequest, tls,
};
use serde_json::json;

use crate::publish::{client, one_hop, one_shard_db, quantile, single_commits, start_sites};
use crate::report::{Measurement, Reporter};

const MESSAGE: usize = 256;
const TOPICS: usize = 1000;
const BATCH: usize = 100;
const WRITERS: usize = 4;

struct Sizes {
    publish_for: Duration,
    fill: usize,
    topics_read: usize,
    probes: usize,
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let sizes = if smoke {
        Sizes { publish_for: Duration::from_secs(2), fill: 100_000, topics_read: 20, probes: 100 }
    } else {
        Sizes { publish_for: Duration::from_secs(10), fill: 1_000_000, topics_read: 100, probes: 1000 }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(reporter, &sizes))
}

fn batch(n: usize) -> Vec<Message> {
    (0..BATCH)
        .map(|i| {
            let topic = Topic::new(format!("t/{}", (n * BATCH + i) % TOPICS)).expect("topic");
            Message::new(topic, (0..MESSAGE).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
        })
        .collect()
}

async fn write(
    endpoint: &Endpoint,
    at: SocketAddr,
    db: &DbName,
    messages: Vec<Message>,
    ack: Ack,
) -> anyhow::Result<usize> {
    let n = messages.len();
    let request = Request::Write(WriteRequest {
        db: db.clone(),
        shard: 0,
        messages,
        producer: None,
        ack,
        ack_timeout_ms: 10_000,
    });
    match endpoint.request(at, &request).await? {
        Response::Written { ids } if ids.len() == n => Ok(n),
        other => anyhow::bail!("write answered {other:?}"),
    }
}

async fn measure(reporter: &Reporter, sizes: &Sizes) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster)?;
    let db = DbName::new("streams")?;
    let sites = start_sites(root.path(), &cluster, &db).await?;
    let credentials = Credentials::load(&tls::operator_dir_beside(&cluster))?;
    let target = sites[0].endpoint.local_addr();
    // A db whose one replica is site 0's: what a write costs without followers.
    let solo = DbName::new("solo")?;
    let record = one_shard_db(&cluster, &solo, 1);
    for site in &sites {
        site.inventory.put_db(&record)?;
    }
    sites[0].inventory.set_replica(&solo, 0, cairn_inventory::ReplicaState::Ready)?;
    let outcome = async {
        // The baseline: the same batches, raw heed, one writer.
        let raw_batches: Vec<Vec<Vec<u8>>> = (0..200).map(|n| batch(n).into_iter().map(|m| m.payload).collect()).collect();
        let raw = crate::store::raw_heed(&raw_batches)?;
        // The last row: the same writes to a db whose one replica is site 0's (no
        // followers pulling and committing on the shared disk meanwhile).
        let runs = [
            (&db, Ack::Local, "--ack local", Some(0.8), 3),
            (&db, Ack::Quorum, "--ack quorum", None, 3),
            (&solo, Ack::Local, "replication 1 (no followers)", None, 1),
        ];
        for (db, ack, name, aim, replicas) in runs {
            let rate = publish_rate(&credentials, target, db, ack, sizes.publish_for).await?;
            reporter.record(&Measurement {
                scenario: "streams",
                name: format!("publish by topic, {name}"),
                unit: "entries/s",
                ours: rate,
                baseline_name: "raw LMDB appends of the same batches".into(),
                baseline: raw,
                ratio: rate / raw,
                aim,
                params: json!({ "writers": WRITERS, "batch": BATCH, "message_bytes": MESSAGE, "topics": TOPICS,
                    "replicas": replicas, "seconds": sizes.publish_for.as_secs_f64() }),
                runs: json!({ "ours": [rate], "baseline": [raw] }),
            })?;
        }
        reads(reporter, &credentials, target, &db, sizes).await?;
        latencies(reporter, &credentials, &sites, &db, &solo, sizes).await
    }
    .await;
    for site in sites {
        site.shutdown().await;
    }
    outcome
}

async fn publish_rate(
    credentials: &Credentials,
    target: SocketAddr,
    db: &DbName,
    ack: Ack,
    span: Duration,
) -> anyhow::Result<f64> {
    let endpoints = (0..WRITERS).map(|_| client(credentials, target)).collect::<anyhow::Result<Vec<_>>>()?;
    for endpoint in &endpoints {
        write(endpoint, target, db, batch(0), ack).await?;
    }
    // Payloads are made before the clock starts (the raw baseline's are too): every
    // topic of 1,000 four times over, each batch with its own random bytes.
    let pool: std::sync::Arc<Vec<Vec<Message>>> =
        std::sync::Arc::new((0..4 * TOPICS / BATCH).map(batch).collect());
    let start = Instant::now();
    let tasks: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(w, endpoint)| {
            let (endpoint, db, pool) = (endpoint.clone(), db.clone(), pool.clone());
            tokio::spawn(async move {
                let mut acked = 0;
                let mut n = w;
                while start.elapsed() < span {
                    acked += write(&endpoint, target, &db, pool[n % pool.len()].clone(), ack).await?;
                    n += WRITERS;
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task.await??;
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    for endpoint in endpoints {
        endpoint.close().await;
    }
    Ok(rate)
}

/// Reads the whole shard with `filter`, page by page; answers (entries, seconds).
async fn read_all(
    endpoint: &Endpoint,
    at: SocketAddr,
    db: &DbName,
    filter: &TopicFilter,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let (mut start, mut n) = (FetchStart::Earliest, 0);
    loop {
        let request = Request::Fetch(FetchRequest {
            db: db.clone(),
            shard: 0,
            start: start.clone(),
            filter: filter.clone(),
            since_ms: None,
            max_entries: 10_000,
            wait_ms: 0,
        });
        match endpoint.request(at, &request).await? {
            Response::Fetched { entries, cursor, more } => {
                n += entries.len();
                start = FetchStart::After(cursor);
                if !more {
                    return Ok((n, started.elapsed().as_secs_f64()));
                }
            }
            other => anyhow::bail!("fetch answered {other:?}"),
        }
    }
}

async fn reads(
    reporter: &Reporter,
    credentials: &Credentials,
    target: SocketAddr,
    db: &DbName,
    sizes: &Sizes,
) -> anyhow::Result<()> {
    let endpoint = client(credentials, target)?;
    // Fill up to `fill` entries (the publish runs left some).
    let (mut held, _) = read_all(&endpoint, target, db, &TopicFilter::all()).await?;
    let mut n = 1_000_000;
    while held < sizes.fill {
        held += write(&endpoint, target, db, batch(n), Ack::Local).await?;
        n += 1;
    }
    let (whole, whole_s) = read_all(&endpoint, target, db, &TopicFilter::all()).await?;
    let whole_rate = whole as f64 / whole_s;
    let (mut one, mut one_s) = (0, 0.0);
    for t in 0..sizes.topics_read {
        let (k, s) =
            read_all(&endpoint, target, db, &TopicFilter::new(format!("t/{}", t * 7 % TOPICS))?).await?;
        one += k;
        one_s += s;
    }
    let one_rate = one as f64 / one_s;
    let (plus, plus_s) = read_all(&endpoint, target, db, &TopicFilter::new("t/+")?).await?;
    let plus_rate = plus as f64 / plus_s;
    let scan = raw_scan(whole)?;
    let params = json!({ "entries": whole, "topics": TOPICS, "message_bytes": MESSAGE, "topics_read": sizes.topics_read });
    for (name, rate, baseline_name, baseline, aim) in [
        ("read a whole-db stream", whole_rate, "raw LMDB scan of as many entries", scan, None),
        ("read one topic of 1,000", one_rate, "the whole-db read's per-entry rate", whole_rate, Some(0.5)),
        ("read a + filter", plus_rate, "raw LMDB scan of as many entries", scan, None),
    ] {
        reporter.record(&Measurement {
            scenario: "streams",
            name: name.into(),
            unit: "entries/s",
            ours: rate,
            baseline_name: baseline_name.into(),
            baseline,
            ratio: rate / baseline,
            aim,
            params: params.clone(),
            runs: json!({ "ours": [rate], "baseline": [baseline], "one_topic_entries": one }),
        })?;
    }
    endpoint.close().await;
    Ok(())
}

/// Entries per second of a raw heed scan over `n` entries of `MESSAGE` bytes.
fn raw_scan(n: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    // SAFETY: a fresh private directory, opened once.
    let env = unsafe { heed::EnvOpenOptions::new().map_size(4 << 30).max_dbs(2).open(dir.path())? };
    let wtxn = env.write_txn()?;
    let table: heed::Database<heed::types::Bytes, heed::types::Bytes> = env
        .create_databases_and_commit(wtxn, |o, w| {
            o.create_database(w, Some("raw")).map(heed::CommitOrAbort::<_, ()>::Commit)
        })?
        .unwrap_commit();
    let mut wtxn = env.write_txn()?;
    let value = vec![7u8; MESSAGE];
    for i in 0..n as u64 {
        table.put(&mut wtxn, &i.to_be_bytes(), &value)?;
    }
    wtxn.commit()?;
    let rtxn = env.read_txn()?;
    let start = Instant::now();
    let mut bytes = 0;
    for item in table.iter(&rtxn)? {
        bytes += item?.1.len();
    }
    anyhow::ensure!(bytes == n * MESSAGE);
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn latencies(
    reporter: &Reporter,
    credentials: &Credentials,
    sites: &[cairn_node::site::Site],
    db: &DbName,
    solo: &DbName,
    sizes: &Sizes,
) -> anyhow::Result<()> {
    let target = sites[0].endpoint.local_addr();
    let hop = one_hop(credentials, target).await? + 1.0 / single_commits(300)?;
    let endpoint = client(credentials, target)?;
    let one = |i: usize| vec![Message::new(Topic::new("lat").expect("topic"), vec![i as u8; MESSAGE])];
    // The last row: the same probes to a db whose one replica is site 0's (no followers
    // pulling and committing on the shared disk meanwhile).
    let runs = [
        (db, Ack::Local, "--ack local", Some(1.0 / 1.5), 3),
        (db, Ack::Quorum, "--ack quorum", Some(1.0 / 2.5), 3),
        (solo, Ack::Local, "replication 1 (no followers)", None, 1),
    ];
    for (db, ack, name, aim, replicas) in runs {
        let mut times = Vec::with_capacity(sizes.probes);
        for i in 0..sizes.probes {
            let started = Instant::now();
            write(&endpoint, target, db, one(i), ack).await?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let ms = quantile(&times, 0.5) * 1e3;
        reporter.record(&Measurement {
            scenario: "streams",
            name: format!("one writer, one message, {name}, median"),
            unit: "ms",
            ours: ms,
            baseline_name: "one hop: round trip + one durable commit".into(),
            baseline: hop * 1e3,
            // Lower is better: the ratio is baseline / ours.
            ratio: hop * 1e3 / ms,
            aim,
            params: json!({ "probes": sizes.probes, "message_bytes": MESSAGE, "replicas": replicas }),
            runs: json!({ "p99_ms": quantile(&times, 0.99) * 1e3 }),
        })?;
    }
    // Publish to subscriber: written at site 0, subscribed at site 1.
    let other = sites[1].endpoint.local_addr();
    let reader = client(credentials, other)?;
    let request = SubscribeRequest {
        db: db.clone(),
        shard: 0,
        start: FetchStart::After(sites[1].inventory.frontier(db, 0)?),
        filter: TopicFilter::new("sub")?,
        since_ms: None,
        credit: 100_000,
    };
    let mut subscription = reader.subscribe(other, &request).await?;
    let mut times = Vec::with_capacity(sizes.probes);
    for i in 0..sizes.probes {
        let started = Instant::now();
        let m = vec![Message::new(Topic::new("sub")?, vec![i as u8; MESSAGE])];
        write(&endpoint, target, db, m, Ack::Local).await?;
        loop {
            match subscription.next_within(Duration::from_secs(10)).await? {
                Some(SubscriptionFrame::Entries { entries, .. }) if !entries.is_empty() => break,
                Some(SubscriptionFrame::Entries { .. } | SubscriptionFrame::Idle { .. }) => {}
                other => anyhow::bail!("subscription said {other:?}"),
            }
        }
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    for (name, q) in [("median", 0.5), ("p99", 0.99)] {
        let ms = quantile(&times, q) * 1e3;
        reporter.record(&Measurement {
            scenario: "streams",
            name: format!("publish to subscriber at another site, {name}"),
            unit: "ms",
            ours: ms,
            baseline_name: "one hop: round trip + one durable commit".into(),
            baseline: hop * 1e3,
            ratio: hop * 1e3 / ms,
            aim: None,
            params: json!({ "probes": sizes.probes, "message_bytes": MESSAGE }),
            runs: json!({ "ours": [ms] }),
        })?;
    }
    endpoint.close().await;
    reader.close().await;
    Ok(())
}
