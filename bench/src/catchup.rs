//! `catchup`: a new replica copying a shard from an upstream, against a raw TCP copy of
//! the same bytes and raw LMDB writes of the same entries, in the same run.
//!
//! Two sites run in this process on loopback (real endpoints, gossip, inventories on
//! disk). The upstream holds one shard of `entries` × 1 KiB; the other site is given an
//! `add_replica` step from it, and the time until its replica is ready is measured.

use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_inventory::Role;
use cairn_inventory::{
    DbName, DbRecord, DbSettings, Hlc, InventoryConfig, Plan, PlanId, PlanOrigin, ReplicaState, Retention,
    Step,
};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::tls;
use serde_json::json;

use crate::report::{Measurement, Reporter};

const ENTRY: usize = 1024;
/// Entries per upstream append transaction and per baseline LMDB transaction (the same
/// as one pull batch: 1 MiB).
const PER_TXN: usize = 1024;

fn options(root: &std::path::Path, name: &str, cluster: &std::path::Path) -> SiteOptions {
    let mut o = {
        let data_dir = root.join(name);
        cairn_node::credentials::issue_site_from_dir(cluster, &data_dir, Role::Core)
            .expect("issuing a site certificate");
        SiteOptions::new(data_dir, "127.0.0.1:0".parse().expect("literal"))
    };
    o.gossip.interval = Duration::from_millis(100);
    // Replicas are placed by hand here: no automatic repair or rebalance.
    o.auto_repair = false;
    o.auto_rebalance = false;
    o.inventory = InventoryConfig { map_size: 2 << 30, ..InventoryConfig::default() };
    o
}

/// MB/s of a catch-up of `data` (batches of entries) from one site to another, and the
/// number of write transactions the receiver used (batches merge when the disk lags).
async fn ours(data: &[Vec<Vec<u8>>]) -> anyhow::Result<(f64, u64)> {
    let root = tempfile::tempdir()?;
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster)?;
    let upstream = Site::start(options(root.path(), "up", &cluster)).await?;
    let db = DbName::new("bench")?;
    let up_id = upstream.inventory.identity().site_id;
    upstream.inventory.put_db(&cairn_tests::sealed(
        &cluster,
        DbRecord::new(
            db.clone(),
            DbSettings::new(1, 2, Retention::default()).expect("settings in range"),
            Hlc { wall_ms: cairn_inventory::now_ms(), logical: 0 },
            up_id,
        ),
    ))?;
    upstream.inventory.set_replica(&db, 0, ReplicaState::Ready)?;
    let mut bytes = 0;
    for batch in data {
        upstream.inventory.append(&db, 0, batch)?;
        bytes += batch.iter().map(Vec::len).sum::<usize>();
    }
    let mut o = options(root.path(), "new", &cluster);
    o.gossip.seeds = vec![upstream.endpoint.local_addr().to_string()];
    let new = Site::start(o).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !new.view().is_live(up_id) || new.view().db(&db).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the upstream never showed in the new site's view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plan = Plan {
        db: db.clone(),
        plan_id: PlanId(1),
        priority: 100,
        origin: PlanOrigin::Operator { via: up_id },
        steps: vec![Step::AddReplica { shard: 0, upstreams: vec![up_id] }],
    };
    let start = Instant::now();
    new.inventory.offer(&plan)?;
    while new.inventory.replica(&db, 0)?.map(|r| r.state) != Some(ReplicaState::Ready) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "catch-up did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let held = new.inventory.log_stats(&db, 0)?;
    anyhow::ensure!(held.bytes as usize == bytes, "the new replica holds {} of {bytes} bytes", held.bytes);
    let transactions = new.data.counters().batches;
    new.shutdown().await;
    upstream.shutdown().await;
    Ok((bytes as f64 / 1e6 / elapsed.as_secs_f64(), transactions))
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let total: usize = if smoke { 32 << 20 } else { 1 << 30 };
    let entries = total / ENTRY;
    let data: Vec<Vec<Vec<u8>>> = (0..entries / PER_TXN)
        .map(|_| (0..PER_TXN).map(|_| (0..ENTRY).map(|_| rand::random()).collect()).collect())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Rounds of baseline and ours, in alternating order, so that the disk's moods (and
    // one run's write-back under the next) weigh on both alike; medians are compared.
    let rounds = if smoke { 1 } else { 3 };
    let (mut tcp, mut lmdb, mut ours, mut transactions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        tcp.push(runtime.block_on(crate::transport::tcp_bulk(total))?);
        let mut baseline = || -> anyhow::Result<()> {
            lmdb.push(crate::store::raw_heed(&data)? * ENTRY as f64 / 1e6);
            Ok(())
        };
        if round % 2 == 0 {
            baseline()?;
        }
        let (rate, txns) = runtime.block_on(self::ours(&data)).context("catch-up run")?;
        ours.push(rate);
        transactions.push(txns);
        if round % 2 == 1 {
            baseline()?;
        }
    }
    let (tcp_median, lmdb_median, ours_median) =
        (crate::report::median(&tcp), crate::report::median(&lmdb), crate::report::median(&ours));
    let baseline = tcp_median.min(lmdb_median);
    reporter.record(&Measurement {
        scenario: "catchup",
        name: "catch-up of one shard, 1 upstream".into(),
        unit: "MB/s",
        ours: ours_median,
        baseline_name: "min(raw TCP copy, raw LMDB write), medians".into(),
        baseline,
        ratio: ours_median / baseline,
        aim: Some(0.7),
        params: json!({ "bytes": total, "entry_bytes": ENTRY, "entries": entries, "per_txn": PER_TXN,
            "rounds": rounds, "receiver_transactions": transactions }),
        runs: json!({ "ours": ours, "tcp": tcp, "lmdb": lmdb }),
    })
}
