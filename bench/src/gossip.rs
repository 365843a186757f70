//! `gossip`: convergence of one key change and gossip traffic, ours (chitchat over the
//! site's QUIC endpoints, with our summaries and view) against plain chitchat over UDP
//! with the same key, interval and cluster size, in the same run.
//!
//! For each N: start N sites in this process (seeds: the first three), wait until every
//! site sees N live sites, let it settle, change one key on site 0 and time how long
//! until every site has it; rounds = time / gossip interval. Traffic: chitchat payload
//! bytes sent per site per second over a 2 s steady-state window (QUIC and UDP headers
//! not counted on either side).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_gossip::signed::SigningKeys;
use cairn_gossip::summary::{DbSummary, Label, SiteSummary, SummaryKey, encode_value};
use cairn_gossip::{Gossip, GossipConfig, QuicCarriage, SiteSnapshot, SiteState};
use cairn_inventory::{ClusterId, DbName, DbRecord, DbSettings, Hlc, Retention, Role, SiteId};
use cairn_transport::tls::ClusterCa;
use cairn_transport::{Credentials, Endpoint, Request, Response, Service, Signer, TransportConfig};
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde_json::json;

use crate::counting::Counting;
use crate::plot::Series;
use crate::report::{Measurement, Reporter, median};

const INTERVAL: Duration = Duration::from_millis(100);
/// Key changes timed per run (the median is reported).
const CHANGES: usize = 5;
/// The longest one size may take, either side, before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Gossip only: the bench's sites answer no requests.
struct NoRequests;

impl Service for NoRequests {
    async fn handle(&self, _peer: cairn_transport::Peer, _request: Request) -> Response {
        Response::Rejected { reason: "bench site".into() }
    }

    async fn pull(
        &self,
        _peer: cairn_transport::Peer,
        _request: cairn_transport::PullRequest,
        mut out: cairn_transport::PullSender,
    ) {
        let _ = out.send(&cairn_transport::PullFrame::Refused { reason: "bench site".into() }).await;
        out.finish();
    }
}

pub(crate) fn snapshot(addr: SocketAddr) -> SiteSnapshot {
    SiteSnapshot {
        revocations: None,
        site: SiteSummary {
            drain: None,
            role: Role::Core,
            addr: Label::truncated(&addr.to_string()),
            version: Label::truncated("bench"),
            started_ms: 0,
            zone: None,
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
        },
        dbs: vec![],
        replicas: vec![],
        plans: vec![],
    }
}

/// The k-th db created, sealed by `operator` (as every db record a site gossips is).
fn the_change(k: usize, operator: &Signer) -> DbRecord {
    let mut record = DbRecord::new(
        DbName::new(format!("bench{k}")).expect("valid"),
        DbSettings::new(4, 2, Retention::default()).expect("settings in range"),
        Hlc { wall_ms: 1, logical: 0 },
        SiteId(1),
    );
    record.seal = Some(operator.seal(&record));
    record
}

/// An operator's signer of the cluster of `ca`.
fn operator(ca: &ClusterCa) -> anyhow::Result<Signer> {
    let identity = cairn_transport::Identity::Operator(cairn_transport::PrincipalName::new("bench")?);
    Ok(Credentials::from_pem(ca.cert_pem(), &ca.issue(&identity, 1)?)?.signer()?)
}

pub(crate) async fn wait(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

/// Seconds to convergence of each change, and bytes per site per second, ours.
async fn ours(n: usize, ca: &ClusterCa) -> anyhow::Result<(Vec<f64>, f64)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let mut sites = Vec::new();
    let mut endpoints = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..n {
        let creds = Credentials::from_pem(
            ca.cert_pem(),
            &ca.issue(&cairn_transport::Identity::Site(SiteId(i as u128 + 1)), 1)?,
        )?;
        let (endpoint, inbox) = Endpoint::serve(
            "127.0.0.1:0".parse()?,
            &creds,
            TransportConfig::default(),
            Arc::new(NoRequests),
        )?;
        let addr = endpoint.local_addr();
        if i < 3 {
            seeds.push(addr.to_string());
        }
        let transport = Counting { inner: QuicCarriage::new(endpoint.clone(), inbox), bytes: bytes.clone() };
        let config = GossipConfig { interval: INTERVAL, seeds: seeds.clone(), ..GossipConfig::default() };
        // Signed like a real site's gossip, so the bytes counted include signatures.
        let keys = Arc::new(SigningKeys::new(creds.signer()?));
        sites.push(
            Gossip::start(
                SiteId(i as u128 + 1),
                ClusterId(1),
                addr,
                &transport,
                config,
                &snapshot(addr),
                keys,
                creds.trust()?,
            )
            .await?,
        );
        endpoints.push(endpoint);
    }
    wait("every view complete", Duration::from_secs(120), async || {
        sites.iter().all(|g| {
            let v = g.view();
            v.sites.len() == n && v.sites.iter().all(|s| s.state == SiteState::Live)
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_site = (bytes.load(Ordering::Relaxed) - before) as f64 / n as f64 / 2.0;
    let mut changed = snapshot(endpoints[0].local_addr());
    let mut took = Vec::new();
    let operator = operator(ca)?;
    for k in 0..CHANGES {
        let db = the_change(k, &operator);
        let name = db.name.clone();
        changed.dbs.push(db);
        sites[0].publish(&changed).await;
        let t = wait("the change everywhere", Duration::from_secs(60), async || {
            sites.iter().all(|g| g.view().db(&name).is_some())
        })
        .await?;
        took.push(t.as_secs_f64());
    }
    for g in sites {
        g.shutdown().await;
    }
    for e in endpoints {
        e.close().await;
    }
    Ok((took, per_site))
}

/// The same with plain chitchat over UDP, the same keys and values.
async fn plain(n: usize, ca: &ClusterCa) -> anyhow::Result<(Vec<f64>, f64)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let transport = Counting { inner: UdpTransport, bytes: bytes.clone() };
    let mut handles: Vec<ChitchatHandle> = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..n {
        let addr: SocketAddr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        if i < 3 {
            seeds.push(addr.to_string());
        }
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{i}"), 0, addr),
            cluster_id: "bench".into(),
            gossip_interval: INTERVAL,
            listen_addr: addr,
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: INTERVAL,
                sampling_window_size: 100,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![(SummaryKey::Site.render(), encode_value(&snapshot(addr).site))];
        handles.push(chitchat::spawn_chitchat(config, initial, &transport).await.context("plain chitchat")?);
    }
    wait("every plain view complete", Duration::from_secs(120), async || {
        for h in &handles {
            if h.chitchat().lock().await.live_nodes().count() != n {
                return false;
            }
        }
        true
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_site = (bytes.load(Ordering::Relaxed) - before) as f64 / n as f64 / 2.0;
    let origin = handles[0].chitchat_id().clone();
    let mut took = Vec::new();
    let operator = operator(ca)?;
    for k in 0..CHANGES {
        let db = the_change(k, &operator);
        let summary = DbSummary::from(&db);
        let key = SummaryKey::Db(db.name).render();
        handles[0].chitchat().lock().await.self_node_state().set(key.clone(), encode_value(&summary));
        let t = wait("the plain change everywhere", Duration::from_secs(60), async || {
            for h in &handles {
                let chitchat = h.chitchat();
                let guard = chitchat.lock().await;
                if guard.node_state(&origin).and_then(|s| s.get(&key)).is_none() {
                    return false;
                }
            }
            true
        })
        .await?;
        took.push(t.as_secs_f64());
    }
    for h in handles {
        let _ = h.shutdown().await;
    }
    Ok((took, per_site))
}

/// Runs one side for one size, giving up after [`RUN_LIMIT`].
async fn bounded<T>(what: String, run: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    eprintln!("gossip: {what}…");
    match tokio::time::timeout(RUN_LIMIT, run).await {
        Ok(result) => result,
        Err(_) => bail!("{what} did not finish within {RUN_LIMIT:?}"),
    }
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let sizes: Vec<usize> = match std::env::var("CAIRN_BENCH_GOSSIP_SIZES") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) if smoke => vec![10],
        // 100 QUIC endpoints with their chitchats in one process did not converge within
        // the run limit on the 2-core machine (see bench/README.md); ask for it with
        // CAIRN_BENCH_GOSSIP_SIZES=10,50,100 on a bigger one.
        Err(_) => vec![10, 50],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // (N, ours, plain chitchat) for the plots.
    let mut rounds = Vec::new();
    let mut bytes = Vec::new();
    runtime.block_on(async {
        let ca = ClusterCa::generate()?;
        for &n in &sizes {
            let (plain_secs, plain_bytes) = bounded(format!("N={n}, plain chitchat"), plain(n, &ca)).await?;
            let (our_secs, our_bytes) = bounded(format!("N={n}, ours"), ours(n, &ca)).await?;
            let interval = INTERVAL.as_secs_f64();
            let params = json!({
                "sites": n, "interval_ms": INTERVAL.as_millis() as u64, "seeds": 3, "changes": CHANGES,
            });
            let (ours_rounds, plain_rounds) = (median(&our_secs) / interval, median(&plain_secs) / interval);
            rounds.push((n as f64, ours_rounds, plain_rounds));
            bytes.push((n as f64, our_bytes, plain_bytes));
            reporter.record(&Measurement {
                scenario: "gossip",
                name: format!("one key everywhere, N={n} (rounds)"),
                unit: "rounds",
                ours: ours_rounds,
                baseline_name: "plain chitchat/UDP".into(),
                baseline: plain_rounds,
                // Lower is better here: the ratio is baseline / ours so ≥ aim is good.
                ratio: plain_rounds / ours_rounds,
                aim: Some(1.0 / 1.2),
                params: params.clone(),
                runs: json!({ "ours_seconds": our_secs, "baseline_seconds": plain_secs }),
            })?;
            reporter.record(&Measurement {
                scenario: "gossip",
                name: format!("gossip bytes per site, N={n}"),
                unit: "B/s",
                ours: our_bytes,
                baseline_name: "plain chitchat/UDP".into(),
                baseline: plain_bytes,
                ratio: our_bytes / plain_bytes,
                aim: None,
                params,
                runs: json!({}),
            })?;
        }
        anyhow::Ok(())
    })?;
    let series = |figures: &[(f64, f64, f64)]| {
        let ours = figures.iter().map(|f| (f.0, f.1)).collect();
        let plain = figures.iter().map(|f| (f.0, f.2)).collect();
        [
            Series { label: "cairn (chitchat over QUIC)", points: ours },
            Series { label: "plain chitchat/UDP", points: plain },
        ]
    };
    let dir = reporter.dir();
    let title = "Gossip: rounds until one key is everywhere";
    crate::plot::scaling(
        &dir.join("gossip-rounds.svg"),
        title,
        "sites (N)",
        "gossip rounds",
        &series(&rounds),
    )?;
    let title = "Gossip: bytes sent per site per second";
    crate::plot::scaling(&dir.join("gossip-bytes.svg"), title, "sites (N)", "B/s per site", &series(&bytes))
}
