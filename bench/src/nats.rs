//! `cairn-bench nats`: cairn beside a peer in the same run — a 3-server NATS JetStream
//! cluster (Debian's `nats-server`, file storage, one stream of 3 replicas) and 3 real
//! `cairn start` sites (a db of 3 shards × 3 replicas), each driven through its own
//! client as hard as it goes:
//!
//! - acknowledged publishes/s of 256-byte messages: cairn's `Producer` (pipelined,
//!   batched per shard) with `--ack local` and `quorum`, against async-nats publishing to
//!   JetStream with up to 4,096 acknowledgements outstanding (NATS answers after its
//!   quorum of the stream's replicas). Aim: cairn quorum ≥ 1.5× NATS.
//! - publish-to-consumer latency, messages paced one per 2 ms: cairn's subscription
//!   against a JetStream pull consumer, median and p99. Aim: cairn quorum's p99 ≤ NATS's.
//!
//! Without `nats-server` on the PATH the scenario prints SKIPPED and records nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use cairn_client::{Ack, ClientConfig, Cursor, Message, ProducerOptions, SubscribeOptions, Topic};
use cairn_tests::{SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir};
use cairn_transport::{Identity, PrincipalName};
use futures::StreamExt;
use serde_json::json;

use crate::report::{Measurement, Reporter, median};

/// Payload bytes per message.
const MESSAGE: usize = 256;
/// Time between latency probes.
const PACE: Duration = Duration::from_millis(2);
/// Acknowledgements a NATS publisher keeps outstanding.
const NATS_WINDOW: usize = 4096;

struct Sizes {
    messages: usize,
    probes: usize,
}

/// Child processes killed when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    if Command::new("nats-server").arg("--version").output().is_err() {
        println!(
            "nats       SKIPPED: nats-server is not installed (apt-get install nats-server; .ci/run does)"
        );
        return Ok(());
    }
    let sizes = if smoke {
        Sizes { messages: 5_000, probes: 200 }
    } else {
        Sizes { messages: 100_000, probes: 2_000 }
    };
    let bin = crate::failure::cairn_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(reporter, &bin, &sizes))
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:>16}").into_bytes();
    p.resize(MESSAGE, b'x');
    p
}

/// The index a payload carries.
fn index_of(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload.get(..16)?).ok()?.trim().parse().ok()
}

async fn measure(reporter: &Reporter, bin: &Path, sizes: &Sizes) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (nats_procs, nats_url) = start_nats(root.path()).await?;
    let (sites, client) = start_cairn(root.path(), bin).await?;

    let nats = async_nats::connect(&nats_url).await.context("connecting to nats-server")?;
    let js = jetstream::new(nats);
    let stream = create_stream(&js, "BENCH", "bench.>").await?;
    let nats_rate = nats_publish(&js, sizes.messages).await?;
    let local = cairn_publish(&client, Ack::Local, sizes.messages).await?;
    let quorum = cairn_publish(&client, Ack::Quorum, sizes.messages).await?;
    let params = json!({"messages": sizes.messages, "bytes": MESSAGE, "sites": 3, "replicas": 3, "cairn_shards": 3,
        "nats": "3 servers, JetStream file storage, 1 stream R3", "nats_window": NATS_WINDOW});
    for (name, rate, aim) in
        [("publish ack local, msgs/s", local, None), ("publish ack quorum, msgs/s", quorum, Some(1.5))]
    {
        reporter.record(&Measurement {
            scenario: "nats",
            name: name.into(),
            unit: "msg/s",
            ours: rate,
            baseline_name: "NATS R3".into(),
            baseline: nats_rate,
            ratio: rate / nats_rate,
            aim,
            params: params.clone(),
            runs: json!([rate]),
        })?;
    }
    drop(stream);

    let nats_latency = nats_latency(&js, sizes.probes).await?;
    for (ack, name) in [(Ack::Local, "local"), (Ack::Quorum, "quorum")] {
        let ours = cairn_latency(&client, ack, sizes.probes).await?;
        for (what, pick, aim) in [("median", 0, None), ("p99", 1, Some(1.0))] {
            let (mine, theirs) = ([ours.0, ours.1][pick], [nats_latency.0, nats_latency.1][pick]);
            reporter.record(&Measurement {
                scenario: "nats",
                name: format!("publish→consumer {what} latency, ack {name}"),
                unit: "ms",
                ours: mine,
                baseline_name: "NATS R3".into(),
                baseline: theirs,
                // Lower is better: the ratio is theirs / ours.
                ratio: theirs / mine,
                aim: if name == "quorum" { aim } else { None },
                params: json!({"probes": sizes.probes, "pace_ms": PACE.as_millis() as u64}),
                runs: json!([mine]),
            })?;
        }
    }
    client.close().await;
    drop(sites);
    drop(nats_procs);
    Ok(())
}

/// Three nats-server processes with JetStream, clustered on loopback; answers them and a
/// client URL.
async fn start_nats(root: &Path) -> anyhow::Result<(Processes, String)> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats-route://127.0.0.1:{c}")).collect();
    let mut procs = Processes(Vec::new());
    for (i, (port, cluster)) in ports.iter().enumerate() {
        let dir = root.join(format!("nats{i}"));
        std::fs::create_dir_all(&dir)?;
        let config = format!(
            "port: {port}\nhost: 127.0.0.1\nserver_name: n{i}\njetstream {{ store_dir: \"{}\" }}\n\
             cluster {{ name: bench\n listen: 127.0.0.1:{cluster}\n routes: [{}] }}\n",
            dir.display(),
            routes.join(", ")
        );
        let path = dir.join("nats.conf");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.join("nats.log"))?;
        procs.0.push(
            Command::new("nats-server")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting nats-server")?,
        );
    }
    Ok((procs, format!("nats://127.0.0.1:{}", ports[0].0)))
}

/// A stream of 3 replicas, once the JetStream cluster has a meta leader.
async fn create_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> anyhow::Result<jetstream::stream::Stream> {
    let started = Instant::now();
    loop {
        let config = jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: 3,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(stream) => return Ok(stream),
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                let _ = error; // Not ready yet (no meta leader): ask again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => bail!("creating the JetStream stream: {error}"),
        }
    }
}

/// Publishes `n` messages with up to [`NATS_WINDOW`] acknowledgements outstanding.
async fn nats_publish(js: &jetstream::Context, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        if pending.len() >= NATS_WINDOW
            && let Some(ack) = pending.pop_front()
        {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await?;
        }
        pending.push_back(js.publish(format!("bench.{}", i % 3), payload(i).into()).await?);
    }
    for ack in pending {
        ack.await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Three `cairn start` sites and a db of 3 shards × 3; a client with an application's
/// certificate.
async fn start_cairn(root: &Path, bin: &Path) -> anyhow::Result<(Vec<SiteProc>, cairn_client::Client)> {
    let cluster = new_cluster_dir(root);
    let addrs = loopback_addrs(3);
    let sites: Vec<SiteProc> = (0..3)
        .map(|i| {
            SiteProc::start(&SiteSpec::new(bin, root, &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]))
        })
        .collect();
    let operator = cairn_tests::Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&operator, addrs[0], 3, Duration::from_secs(60)).await;
    for db in ["bench", "latency"] {
        operator.create_db(addrs[0], db, 3, 3).await;
    }
    cairn_tests::wait_for("the dbs placed", Duration::from_secs(60), async || {
        let view = operator.view(addrs[0]).await.ok()?;
        let placed = |name: &str| {
            view.db(&name.parse().ok()?)
                .map(|d| d.placement.iter().all(|s| s.replicas.iter().filter(|r| r.is_ready()).count() == 3))
        };
        (view.plans.is_empty() && placed("bench")? && placed("latency")?).then_some(())
    })
    .await;
    let app = cairn_tests::issue_credentials(
        &cluster,
        &Identity::Client(PrincipalName::new("bench").expect("name")),
        &root.join("app"),
    );
    let client = cairn_client::Client::connect(&app, ClientConfig::new(addrs.iter().copied()))?;
    Ok((sites, client))
}

/// Publishes `n` messages through one producer; answers acknowledged messages a second.
async fn cairn_publish(client: &cairn_client::Client, ack: Ack, n: usize) -> anyhow::Result<f64> {
    let producer = client.producer("bench".parse()?, ProducerOptions { ack, ..Default::default() })?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let topic = Topic::new(format!("bench/{}", i % 3))?;
        acks.push(producer.send(Message::new(topic, payload(i))).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await;
    Ok(rate)
}

/// (median, p99) in ms of `samples` seconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let p99 =
        samples.get(((samples.len() as f64) * 0.99) as usize).or(samples.last()).copied().unwrap_or(0.0);
    (median(&samples) * 1e3, p99 * 1e3)
}

/// Paced publishes to a JetStream stream read by a pull consumer.
async fn nats_latency(js: &jetstream::Context, probes: usize) -> anyhow::Result<(f64, f64)> {
    let stream = create_stream(js, "LATENCY", "lat.>").await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let sent: std::sync::Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![None; probes]));
    let publisher = {
        let (js, sent) = (js.clone(), sent.clone());
        tokio::spawn(async move {
            for i in 0..probes {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(Instant::now());
                if let Ok(ack) = js.publish("lat.x", payload(i).into()).await {
                    let _ = ack.await;
                }
                tokio::time::sleep(PACE).await;
            }
        })
    };
    let mut samples = Vec::with_capacity(probes);
    while samples.len() < probes {
        let Some(message) = tokio::time::timeout(Duration::from_secs(30), messages.next()).await? else {
            break;
        };
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(at) = index_of(&message.payload)
            .and_then(|i| sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i])
        {
            samples.push(at.elapsed().as_secs_f64());
        }
    }
    publisher.await?;
    Ok(percentiles(samples))
}

/// Paced publishes (one message each, at `ack`) read by a subscription at another site.
async fn cairn_latency(client: &cairn_client::Client, ack: Ack, probes: usize) -> anyhow::Result<(f64, f64)> {
    // A fresh db of this run: from its start.
    let db: cairn_client::DbName = "latency".parse()?;
    let mut subscription = client.subscribe(&db, Cursor::default(), &SubscribeOptions::default()).await?;
    let producer = client.producer(db.clone(), ProducerOptions { ack, ..Default::default() })?;
    let sent: std::sync::Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![None; probes]));
    let publisher = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..probes {
                sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(Instant::now());
                let topic = Topic::new("lat").expect("topic");
                if let Ok(ack) = producer.send(Message::new(topic, payload(i))).await {
                    let _ = ack.await;
                }
                tokio::time::sleep(PACE).await;
            }
            producer.close().await;
        })
    };
    let mut samples = Vec::with_capacity(probes);
    while samples.len() < probes {
        let Some(delivered) = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await?
        else {
            break;
        };
        if let Some(at) = index_of(&delivered?.entry.payload)
            .and_then(|i| sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i])
        {
            samples.push(at.elapsed().as_secs_f64());
        }
    }
    publisher.await?;
    Ok(percentiles(samples))
}
