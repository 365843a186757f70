//! `gossip-many`: N sites in one process over chitchat's in-memory channel transport —
//! cairn's signed summaries, verifier and view on one side, plain chitchat with the same
//! number of keys and value bytes on the other — until every view is complete, to show
//! the design holds at a size no single machine runs as processes (full: 300 sites;
//! `CAIRN_BENCH_GOSSIP_MANY=1000` for a thousand). `CAIRN_BENCH_GOSSIP_MANY_INTERVAL_MS`
//! sets the round (default: 250 ms up to 100 sites, N × 10 ms beyond), and
//! `CAIRN_BENCH_GOSSIP_MANY_SIDES=cairn|plain` runs one side only (the other's figures
//! are then null): on a 2-core machine plain chitchat does not converge in one process
//! at 1,000 sites with 10 s rounds, and cairn needs 20 s rounds there.
//!
//! Reported per side: seconds and rounds until every view has held N live sites, chitchat
//! bytes per site per second once complete (the channel transport's count of encoded
//! messages), and the process's RSS growth per site. Plain chitchat runs first, then
//! cairn, in the same process: memory the first side freed may be reused by the second,
//! so cairn's memory figure is, if anything, low.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_gossip::signed::SigningKeys;
use cairn_gossip::{Gossip, GossipConfig, SiteState};
use cairn_inventory::{ClusterId, SiteId};
use cairn_transport::tls::ClusterCa;
use cairn_transport::{Credentials, Identity};
use chitchat::transport::ChannelTransport;
use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion};
use serde_json::json;

use crate::gossip::{snapshot, wait};
use crate::gossip_procs::rss_mib;
use crate::report::{Measurement, Reporter};

/// How long either side may take to a complete view: 15 minutes, or 60 rounds if longer.
fn limit(interval: Duration) -> Duration {
    Duration::from_secs(900).max(interval * 60)
}
/// The steady-state window bytes are counted over: 5 s, or two rounds if longer (a
/// window shorter than a round catches only the sites whose turn falls in it).
fn window(interval: Duration) -> Duration {
    Duration::from_secs(5).max(interval * 2)
}

/// One side's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    complete_s: f64,
    bytes_per_site_s: f64,
    rss_mib_per_site: f64,
}

/// Which views have been complete (all N live) at least once — converged, even if a
/// site saturated by its N − 1 neighbours in the process later misses one heartbeat
/// and flaps — and, every 10 s, how far they are (a long run says where it is).
struct Progress {
    side: &'static str,
    start: Instant,
    shown: Instant,
    complete_once: Vec<bool>,
}

impl Progress {
    fn new(side: &'static str) -> Self {
        Self { side, start: Instant::now(), shown: Instant::now(), complete_once: Vec::new() }
    }

    /// Takes each view's live count; answers whether every view has been complete.
    fn converged(&mut self, live: &[usize], n: usize) -> bool {
        self.complete_once.resize(live.len(), false);
        for (once, &l) in self.complete_once.iter_mut().zip(live) {
            *once |= l == n;
        }
        if self.shown.elapsed() >= Duration::from_secs(10) {
            self.shown = Instant::now();
            let now = live.iter().filter(|&&l| l == n).count();
            let once = self.complete_once.iter().filter(|&&c| c).count();
            let mut sorted = live.to_vec();
            sorted.sort_unstable();
            let least = sorted.first().copied().unwrap_or(0);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
            let secs = self.start.elapsed().as_secs();
            eprintln!(
                "gossip-many {}: {secs} s, {once} of {n} views complete at least once, {now} now; \
                 live sites per view: median {median}, least {least}; RSS {:.0} MiB",
                self.side,
                process_rss()
            );
        }
        self.complete_once.iter().all(|&c| c)
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, 1 + (i % 250) as u8], 7000))
}

fn process_rss() -> f64 {
    rss_mib(std::process::id()).unwrap_or(f64::NAN)
}

/// Bytes per site per second over [`window`].
async fn steady_bytes(transport: &ChannelTransport, n: usize, interval: Duration) -> f64 {
    let window = window(interval);
    let before = transport.statistics().num_bytes_total;
    tokio::time::sleep(window).await;
    (transport.statistics().num_bytes_total - before) as f64 / n as f64 / window.as_secs_f64()
}

async fn ours(n: usize, interval: Duration) -> anyhow::Result<(Figures, u64, u64)> {
    let transport = ChannelTransport::with_mtu(65_507);
    let config = GossipConfig {
        interval,
        // The channel transport carries chitchat's bytes as they are: chitchat
        // compresses its digests, as plain chitchat's nodes do here.
        compressed_digests: true,
        seeds: (0..3).map(|i| addr(i).to_string()).collect(),
        ..GossipConfig::default()
    };
    let ca = ClusterCa::generate()?;
    let rss_before = process_rss();
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        let id = SiteId(rand::random());
        let credentials = Credentials::from_pem(ca.cert_pem(), &ca.issue(&Identity::Site(id), 1)?)?;
        let keys = Arc::new(SigningKeys::new(credentials.signer()?));
        let trust = credentials.trust()?;
        let site = Gossip::start(
            id,
            ClusterId(7),
            addr(i),
            &transport,
            config.clone(),
            &snapshot(addr(i)),
            keys,
            trust,
        )
        .await?;
        sites.push(site);
    }
    let started = Instant::now();
    let mut progress = Progress::new("cairn");
    wait("every view complete (cairn, in one process)", limit(interval), async || {
        let live: Vec<usize> = sites
            .iter()
            .map(|g| g.view().sites.iter().filter(|s| s.state == SiteState::Live).count())
            .collect();
        progress.converged(&live, n)
    })
    .await?;
    let complete_s = started.elapsed().as_secs_f64();
    let rss_mib_per_site = (process_rss() - rss_before) / n as f64;
    let bytes_per_site_s = steady_bytes(&transport, n, interval).await;
    let (keys, bytes) = sites[0].published_size();
    for site in sites {
        site.shutdown().await;
    }
    Ok((Figures { complete_s, bytes_per_site_s, rss_mib_per_site }, keys, bytes))
}

async fn plain(n: usize, interval: Duration, keys: u64, value_bytes: u64) -> anyhow::Result<Figures> {
    let transport = ChannelTransport::with_mtu(65_507);
    let rss_before = process_rss();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("{:032x}", rand::random::<u128>()), 1, addr(i)),
            cluster_id: "bench".into(),
            gossip_interval: interval,
            listen_addr: addr(i),
            seed_nodes: (0..3).map(|i| addr(i).to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10).max(interval * 4),
                initial_interval: interval,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let values = (0..keys).map(|k| (format!("key{k}"), "v".repeat(value_bytes as usize))).collect();
        nodes.push(chitchat::spawn_chitchat(config, values, &transport).await?);
    }
    let started = Instant::now();
    let mut progress = Progress::new("plain chitchat");
    wait("every view complete (plain chitchat, in one process)", limit(interval), async || {
        let mut live = Vec::with_capacity(n);
        for node in &nodes {
            live.push(node.chitchat().lock().await.live_nodes().count());
        }
        progress.converged(&live, n)
    })
    .await?;
    let complete_s = started.elapsed().as_secs_f64();
    let rss_mib_per_site = (process_rss() - rss_before) / n as f64;
    let bytes_per_site_s = steady_bytes(&transport, n, interval).await;
    for node in nodes {
        node.shutdown().await.context("stopping a chitchat node")?;
    }
    Ok(Figures { complete_s, bytes_per_site_s, rss_mib_per_site })
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let n: usize = match std::env::var("CAIRN_BENCH_GOSSIP_MANY") {
        Ok(n) => {
            n.parse().ok().filter(|n| (4..=5000).contains(n)).context("CAIRN_BENCH_GOSSIP_MANY: 4 to 5000")?
        }
        Err(_) if smoke => 100,
        Err(_) => 300,
    };
    // N sites share this machine's cores, and a round's work grows with N² (every site
    // digests every other): beyond 100 sites, rounds of N × 10 ms, so the process keeps
    // up with its own heartbeats (chitchat's compressed digests alone saturate two cores
    // at 300 sites and 1 s rounds).
    let interval = match std::env::var("CAIRN_BENCH_GOSSIP_MANY_INTERVAL_MS") {
        Ok(ms) => Duration::from_millis(
            ms.parse()
                .ok()
                .filter(|ms| (10..=60_000).contains(ms))
                .context("CAIRN_BENCH_GOSSIP_MANY_INTERVAL_MS: 10 to 60000")?,
        ),
        Err(_) => Duration::from_millis(if n > 100 { n as u64 * 10 } else { 250 }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // What a cairn site publishes, for plain chitchat to carry as much: measured at a
    // small size first (it does not depend on N in an idle cluster).
    let (_, keys, bytes) = runtime.block_on(ours(4, Duration::from_millis(250)))?;
    let keys = keys.max(1);
    let sides = std::env::var("CAIRN_BENCH_GOSSIP_MANY_SIDES").unwrap_or_else(|_| "both".into());
    let nan = Figures { complete_s: f64::NAN, bytes_per_site_s: f64::NAN, rss_mib_per_site: f64::NAN };
    let plain = match sides.as_str() {
        "both" | "plain" => runtime.block_on(plain(n, interval, keys, bytes / keys))?,
        "cairn" => nan,
        other => anyhow::bail!("CAIRN_BENCH_GOSSIP_MANY_SIDES={other}: both, cairn or plain"),
    };
    let ours = if sides == "plain" { nan } else { runtime.block_on(ours(n, interval))?.0 };
    println!("gossip-many N={n}: cairn {ours:?}; plain chitchat {plain:?}");
    let rounds = |f: &Figures| f.complete_s / interval.as_secs_f64();
    let params = json!({
        "sites": n, "interval_ms": interval.as_millis() as u64, "transport": "chitchat channel (in memory)",
        "keys_per_site": keys, "bytes_per_site": bytes,
        "ours_complete_s": ours.complete_s, "plain_complete_s": plain.complete_s,
    });
    let record = |name: &str, unit: &'static str, ours: f64, plain: f64| {
        reporter.record(&Measurement {
            scenario: "gossip-many",
            name: format!("N={n} {name}"),
            unit,
            ours,
            baseline_name: "plain chitchat, same transport".into(),
            baseline: plain,
            ratio: plain / ours,
            aim: None,
            params: params.clone(),
            runs: json!({ "ours": [ours], "baseline": [plain] }),
        })
    };
    record("rounds to every view complete", "rounds", rounds(&ours), rounds(&plain))?;
    record("chitchat bytes per site", "B/s", ours.bytes_per_site_s, plain.bytes_per_site_s)?;
    record("memory per site", "MiB", ours.rss_mib_per_site, plain.rss_mib_per_site)
}
