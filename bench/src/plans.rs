//! `plans`: how long placement changes take, end to end.
//!
//! Sites run in this process on loopback (real endpoints, gossip, inventories on disk,
//! executor and automation), 100 ms gossip rounds.
//!
//! - **Placement**: five sites; a db of 64 shards × 3 is created at one site; the time
//!   until every view shows every shard with three ready replicas and no plan in flight.
//!   Baseline: the time until every view holds the new db at all (one gossip spread),
//!   in the same run — placement needs at least that, plus a second spread for the
//!   replicas. Ratio: baseline / ours.
//! - **Rebalance**: four sites hold a db of 16 shards × 2 with data (1 KiB entries;
//!   64 MiB full, 8 MiB smoke); a fifth joins and automation rebalances. The time until
//!   the view is balanced (±1) again with every replica ready, and the bytes the new
//!   site copied against the minimum — the replicas that balance requires it to take,
//!   times their size. Ratio: minimum / copied.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_gossip::ClusterView;
use cairn_inventory::Role;
use cairn_inventory::{DbName, DbSettings, Retention, SiteId};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::{Response, tls};
use serde_json::json;

use crate::report::{Measurement, Reporter};

const ROUND: Duration = Duration::from_millis(100);
const LIMIT: Duration = Duration::from_secs(300);

fn options(root: &Path, i: usize, cluster: &Path, seed: Option<&Site>) -> SiteOptions {
    let mut o = {
        let data_dir = root.join(format!("s{i}"));
        cairn_node::credentials::issue_site_from_dir(cluster, &data_dir, Role::Core)
            .expect("issuing a site certificate");
        SiteOptions::new(data_dir, "127.0.0.1:0".parse().expect("literal"))
    };
    o.gossip.interval = ROUND;
    o.gossip.seeds = seed.map(|s| s.endpoint.local_addr().to_string()).into_iter().collect();
    o
}

async fn start_sites(root: &Path, cluster: &Path, n: usize) -> anyhow::Result<Vec<Site>> {
    let mut sites: Vec<Site> = Vec::new();
    for i in 0..n {
        let site = Site::start(options(root, i, cluster, sites.first())).await?;
        sites.push(site);
    }
    wait("every site live everywhere", || sites.iter().all(|s| live(&s.view()) == n)).await?;
    Ok(sites)
}

fn live(view: &ClusterView) -> usize {
    view.sites.iter().filter(|s| view.is_live(s.site_id)).count()
}

/// Polls `done` every 10 ms; the time it took, or an error after [`LIMIT`].
async fn wait(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

/// Ready replicas per live site if every shard of `db` has `factor` ready replicas on
/// live sites and no plan is in flight.
fn settled(view: &ClusterView, db: &DbName, factor: usize) -> Option<BTreeMap<SiteId, u64>> {
    let d = view.db(db)?;
    if !view.plans.is_empty() || d.placement.is_empty() {
        return None;
    }
    let mut counts = BTreeMap::new();
    for shard in &d.placement {
        let ready: Vec<_> =
            shard.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).collect();
        if ready.len() != factor || shard.replicas.len() != factor {
            return None;
        }
        for r in ready {
            *counts.entry(r.site_id).or_insert(0) += 1;
        }
    }
    Some(counts)
}

async fn create(site: &Site, name: &DbName, shards: u32, replication: u32) -> anyhow::Result<()> {
    let request = cairn_transport::operator::DbChange::Create {
        name: name.clone(),
        settings: DbSettings::new(shards, replication, Retention::default()).expect("settings in range"),
    };
    // Only an operator creates dbs: its credentials are beside the CA dir, under the root
    // the sites' data dirs are in.
    let root = site.inventory.dir().parent().context("a site's data dir has a parent")?;
    let credentials = tls::Credentials::load(&root.join("cluster-operator"))?;
    let operator =
        cairn_transport::Endpoint::client(&credentials, Default::default(), site.endpoint.local_addr())?;
    let signer = credentials.signer()?;
    let answer =
        cairn_transport::operator::change_db(&operator, site.endpoint.local_addr(), &signer, &request).await;
    let answer = answer?;
    operator.close().await;
    match answer {
        Response::DbCreated { .. } => Ok(()),
        other => anyhow::bail!("create db answered {other:?}"),
    }
}

async fn placement(reporter: &Reporter) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster)?;
    let sites = start_sites(root.path(), &cluster, 5).await?;
    let name = DbName::new("placed")?;
    let start = Instant::now();
    create(&sites[2], &name, 64, 3).await?;
    let known = wait("the db in every view", || sites.iter().all(|s| s.view().db(&name).is_some())).await?;
    wait("64 × 3 placed and ready", || sites.iter().all(|s| settled(&s.view(), &name, 3).is_some())).await?;
    let ours = start.elapsed();
    for site in sites {
        site.shutdown().await;
    }
    let rounds = |d: Duration| d.as_secs_f64() / ROUND.as_secs_f64();
    reporter.record(&Measurement {
        scenario: "plans",
        name: "place a new db of 64 shards × 3 on 5 sites".into(),
        unit: "s",
        ours: ours.as_secs_f64(),
        baseline_name: "the new db known in every view (one gossip spread)".into(),
        baseline: known.as_secs_f64(),
        ratio: known.as_secs_f64() / ours.as_secs_f64(),
        aim: None,
        params: json!({ "sites": 5, "shards": 64, "replication": 3, "round_ms": ROUND.as_millis() as u64 }),
        runs: json!({ "ours_rounds": [rounds(ours)], "baseline_rounds": [rounds(known)] }),
    })
}

async fn rebalance(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    const ENTRY: usize = 1024;
    let total: usize = if smoke { 8 << 20 } else { 64 << 20 };
    let (shards, factor) = (16u32, 2usize);
    let root = tempfile::tempdir()?;
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster)?;
    let mut sites = start_sites(root.path(), &cluster, 4).await?;
    let name = DbName::new("moved")?;
    create(&sites[0], &name, shards, factor as u32).await?;
    wait("16 × 2 placed", || settled(&sites[0].view(), &name, factor).is_some()).await?;
    // Data: the same amount in every shard, written at one of its replicas.
    let per_shard = total / shards as usize / ENTRY;
    let view = sites[0].view();
    for shard in &view.db(&name).context("placed")?.placement {
        let holder = sites.iter().find(|s| s.inventory.identity().site_id == shard.replicas[0].site_id);
        let holder = holder.context("a holder among the sites")?;
        for chunk in (0..per_shard).collect::<Vec<_>>().chunks(1024) {
            let batch: Vec<Vec<u8>> =
                chunk.iter().map(|_| (0..ENTRY).map(|_| rand::random()).collect()).collect();
            holder.inventory.append(&name, shard.shard, &batch)?;
        }
        holder.data.signals.notify(&name, shard.shard);
    }
    let shard_bytes = (per_shard * ENTRY) as u64;
    let full = |v: &ClusterView| {
        v.db(&name)
            .is_some_and(|d| d.placement.iter().flat_map(|s| &s.replicas).all(|r| r.bytes == shard_bytes))
    };
    wait("every replica holding its data", || full(&sites[0].view())).await?;

    let start = Instant::now();
    sites.push(Site::start(options(root.path(), 4, &cluster, sites.first())).await?);
    let newcomer = sites[4].inventory.identity().site_id;
    wait("rebalanced onto the fifth site", || {
        let view = sites[0].view();
        settled(&view, &name, factor).is_some_and(|c| {
            let (min, max) = (c.values().min().copied().unwrap_or(0), c.values().max().copied().unwrap_or(0));
            c.get(&newcomer).is_some_and(|n| *n > 0) && c.len() == 5 && max - min <= 1 && full(&view)
        })
    })
    .await?;
    let ours = start.elapsed();
    let copied = sites[4].data.counters().bytes;
    // 32 replicas on 5 sites: the newcomer must end with at least 6.
    let taken = settled(&sites[0].view(), &name, factor).and_then(|c| c.get(&newcomer).copied()).unwrap_or(0);
    let minimum = (shards as u64 * factor as u64 / 5) * shard_bytes;
    for site in sites {
        site.shutdown().await;
    }
    reporter.record(&Measurement {
        scenario: "plans",
        name: "rebalance 4 -> 5 sites, bytes copied".into(),
        unit: "bytes",
        ours: copied as f64,
        baseline_name: "minimum: replicas balance requires on the new site × their size".into(),
        baseline: minimum as f64,
        ratio: minimum as f64 / copied.max(1) as f64,
        aim: None,
        params: json!({ "bytes": total, "shards": shards, "replication": factor, "entry_bytes": ENTRY,
            "replicas_taken": taken, "seconds": ours.as_secs_f64(), "rounds": ours.as_secs_f64() / ROUND.as_secs_f64() }),
        runs: json!({ "ours": [copied], "minimum": [minimum], "seconds": [ours.as_secs_f64()] }),
    })
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(placement(reporter)).context("placement")?;
    runtime.block_on(rebalance(reporter, smoke)).context("rebalance")
}
