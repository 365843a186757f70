//! `failure`: how fast the cluster notices a dead site and restores replication.
//!
//! Real `cairn start` processes on loopback (the bench builds the `cairn` binary with
//! cargo, or uses `CAIRN_BIN`), 100 ms gossip rounds, `--lost-after-secs 2`. Four sites
//! hold a db of 16 shards × 2 with data (1 KiB entries; 32 MiB full, 4 MiB smoke); one
//! site is SIGKILLed. Measured from the kill: the time until every surviving site's view
//! shows it `dead`, and the time until every shard again has two ready replicas on live
//! sites (its shards recovered from the surviving copies) with no plan in flight.
//!
//! Baselines, in the same run: detection — plain chitchat over UDP, the same number of
//! nodes, interval and failure-detector settings, one node shut down: the time until
//! every other node counts it dead; restoration — that detection time plus `lost_after`
//! (the wait the operator asked for; automation counts it from the site's last
//! heartbeat, so ours can beat this). Ratios are baseline / ours.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_gossip::{ClusterView, SiteState};
use cairn_inventory::{DbName, SiteId};
use cairn_tests::{Client, SiteProc, SiteSpec, loopback_addrs, new_cluster_dir};
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig};
use serde_json::json;

use crate::report::{Measurement, Reporter};

const SITES: usize = 4;
const SHARDS: u32 = 16;
const ENTRY: usize = 1024;
const INTERVAL: Duration = Duration::from_millis(100);
const PHI: f64 = 8.0;
const LOST_AFTER: Duration = Duration::from_secs(2);
const LIMIT: Duration = Duration::from_secs(120);
const DB: &str = "failure";

/// The `cairn` binary: `CAIRN_BIN`, else built (release) by cargo in this workspace.
pub(crate) fn cairn_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CAIRN_BIN") {
        return Ok(bin.into());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&workspace)
        // With the bench in the selection, features resolve as for the bench itself, so the
        // dependencies it was built with are reused and only the `cairn` binary is linked.
        .args(["build", "--release", "--locked", "-p", "cairn-bench", "-p", "cairn-node"])
        .status()
        .context("running cargo to build the cairn binary (or set CAIRN_BIN)")?;
    if !status.success() {
        bail!("building the cairn binary failed ({status})");
    }
    Ok(workspace.join("target/release/cairn"))
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let bin = cairn_binary()?;
    let per_shard: usize = if smoke { 4 << 20 } else { 32 << 20 } / SHARDS as usize / ENTRY;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (dead, restored) = runtime.block_on(measure(&bin, per_shard))?;
    let detection = runtime.block_on(plain_detection())?;
    let params = json!({
        "sites": SITES, "shards": SHARDS, "replication": 2, "entries_per_shard": per_shard,
        "entry_bytes": ENTRY, "interval_ms": INTERVAL.as_millis() as u64, "phi": PHI,
        "lost_after_s": LOST_AFTER.as_secs(),
    });
    reporter.record(&Measurement {
        scenario: "failure",
        name: "SIGKILL to dead in every view".into(),
        unit: "s",
        ours: dead,
        baseline_name: "plain chitchat/UDP, same detector settings".into(),
        baseline: detection,
        ratio: detection / dead,
        aim: None,
        params: params.clone(),
        runs: json!({ "ours": [dead] }),
    })?;
    let baseline = detection + LOST_AFTER.as_secs_f64();
    reporter.record(&Measurement {
        scenario: "failure",
        name: "SIGKILL to replication restored".into(),
        unit: "s",
        ours: restored,
        baseline_name: "plain chitchat detection + lost_after".into(),
        baseline,
        ratio: baseline / restored,
        aim: None,
        params,
        runs: json!({ "ours": [restored] }),
    })
}

/// Seconds from the kill to dead everywhere, and to every shard back at two ready
/// replicas on live sites.
async fn measure(bin: &Path, per_shard: usize) -> anyhow::Result<(f64, f64)> {
    let root = tempfile::tempdir()?;
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(SITES);
    let lost_after = LOST_AFTER.as_secs().to_string();
    let mut sites: Vec<SiteProc> = (0..SITES)
        .map(|i| {
            let mut spec = SiteSpec::new(bin, root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra = vec!["--lost-after-secs".into(), lost_after.clone()];
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    wait(&client, addrs[0], "every site live", |v| {
        v.sites.iter().filter(|s| s.state == SiteState::Live).count() == SITES
    })
    .await?;
    client.create_db(addrs[0], DB, SHARDS, 2).await;
    let view = wait(&client, addrs[0], "the db placed", restored).await?;
    let db = view.db(&DbName::new(DB)?).context("db in view")?;
    for shard in &db.placement {
        let at: SocketAddr = view.site(shard.replicas[0].site_id).context("holder")?.addr.parse()?;
        for first in (0..per_shard).step_by(1024) {
            let count = (per_shard - first).min(1024);
            let messages: Vec<Vec<u8>> =
                (0..count).map(|_| (0..ENTRY).map(|_| rand::random()).collect()).collect();
            client.publish(at, DB, shard.shard, &messages).await.map_err(anyhow::Error::msg)?;
        }
    }
    wait(&client, addrs[0], "every write on both replicas", |v| {
        restored(v)
            && v.db(&DbName::new(DB).expect("name")).is_some_and(|d| {
                d.placement.iter().all(|s| s.replicas.iter().all(|r| r.entries == per_shard as u64))
            })
    })
    .await?;

    let victim: SiteId = sites[SITES - 1].site_id.parse().map_err(anyhow::Error::msg)?;
    let killed = Instant::now();
    sites[SITES - 1].kill();
    let mut dead_at = None;
    let restored_at = loop {
        if killed.elapsed() > LIMIT {
            bail!("replication not restored within {LIMIT:?} of the kill");
        }
        let mut views = Vec::new();
        for at in &addrs[..SITES - 1] {
            views.extend(client.view(*at).await.ok());
        }
        if dead_at.is_none()
            && views.len() == SITES - 1
            && views.iter().all(|v| v.site(victim).is_some_and(|s| s.state == SiteState::Dead))
        {
            dead_at = Some(killed.elapsed());
        }
        if dead_at.is_some() && views.first().is_some_and(|v| restored(v) && !v.is_live(victim)) {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    client.close().await;
    drop(sites);
    Ok((dead_at.expect("set before the loop ends").as_secs_f64(), restored_at.as_secs_f64()))
}

/// Every shard has exactly two ready replicas on live sites, and no plan runs.
fn restored(view: &ClusterView) -> bool {
    let Some(db) = view.db(&DbName::new(DB).expect("name")) else { return false };
    view.plans.is_empty()
        && db
            .placement
            .iter()
            .all(|s| s.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count() == 2)
}

async fn wait(
    client: &Client,
    at: SocketAddr,
    what: &str,
    done: impl Fn(&ClusterView) -> bool,
) -> anyhow::Result<ClusterView> {
    let start = Instant::now();
    loop {
        if let Ok(view) = client.view(at).await
            && done(&view)
        {
            return Ok(view);
        }
        if start.elapsed() > LIMIT {
            bail!("{what}: not within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plain chitchat over UDP, [`SITES`] nodes with our detector settings: seconds from one
/// node's shutdown until every other node counts it dead.
async fn plain_detection() -> anyhow::Result<f64> {
    let mut handles = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..SITES {
        let addr: SocketAddr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        seeds.push(addr.to_string());
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{i}"), 0, addr),
            cluster_id: "bench-failure".into(),
            gossip_interval: INTERVAL,
            listen_addr: addr,
            seed_nodes: seeds[..1].to_vec(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI,
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10).max(INTERVAL * 4),
                initial_interval: INTERVAL,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        handles.push(chitchat::spawn_chitchat(config, Vec::new(), &UdpTransport).await?);
    }
    let start = Instant::now();
    loop {
        let mut live = 0;
        for h in &handles {
            live += h.chitchat().lock().await.live_nodes().count();
        }
        if live == SITES * SITES {
            break;
        }
        if start.elapsed() > LIMIT {
            bail!("plain chitchat nodes did not all see each other");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the detectors learn the heartbeat intervals, as the sites' did.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = handles.pop().context("nodes")?;
    let victim_id = victim.chitchat_id().clone();
    victim.shutdown().await?;
    let stopped = Instant::now();
    loop {
        let mut all = true;
        for h in &handles {
            all &= h.chitchat().lock().await.dead_nodes().any(|id| *id == victim_id);
        }
        if all {
            return Ok(stopped.elapsed().as_secs_f64());
        }
        if stopped.elapsed() > LIMIT {
            bail!("plain chitchat never counted the stopped node dead");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
