//! `store`: shard-log append throughput against raw heed puts of the same bytes.
//!
//! Both sides write batches of `batch` entries of `entry_bytes` random bytes, one durable
//! LMDB commit per batch, into a fresh environment on the same file system. Runs
//! alternate (raw, ours, raw, ours, …) so drift on a shared machine hits both alike; the
//! medians and their ratio are reported. A second figure writes the same entries with
//! 1,000 topics in turn (`t/0` … `t/999`), so each commit also adds to the topic index
//! under every one of them.

use std::time::Instant;

use anyhow::Context;
use cairn_inventory::{ClusterId, DbName, Inventory, InventoryConfig, Message, Topic};
use heed::types::Bytes;
use serde_json::json;

use crate::report::{Measurement, Reporter, median};

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreParams {
    pub(crate) batches: usize,
    pub(crate) batch: usize,
    pub(crate) entry_bytes: usize,
    pub(crate) repeats: usize,
}

impl StoreParams {
    pub(crate) fn new(smoke: bool) -> Self {
        if smoke {
            Self { batches: 60, batch: 1000, entry_bytes: 256, repeats: 5 }
        } else {
            Self { batches: 400, batch: 1000, entry_bytes: 256, repeats: 5 }
        }
    }
}

fn payloads(p: &StoreParams) -> Vec<Vec<Vec<u8>>> {
    (0..p.batches)
        .map(|_| (0..p.batch).map(|_| (0..p.entry_bytes).map(|_| rand::random()).collect()).collect())
        .collect()
}

/// Entries per second through raw heed: u64 keys, the payload as the value.
pub(crate) fn raw_heed(data: &[Vec<Vec<u8>>]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    // SAFETY: a fresh private directory, opened once.
    let env = unsafe { heed::EnvOpenOptions::new().map_size(4 << 30).max_dbs(2).open(dir.path())? };
    let wtxn = env.write_txn()?;
    let table: heed::Database<Bytes, Bytes> = env
        .create_databases_and_commit(wtxn, |o, w| {
            o.create_database(w, Some("raw")).map(heed::CommitOrAbort::<_, ()>::Commit)
        })?
        .unwrap_commit();
    let start = Instant::now();
    let mut n: u64 = 0;
    for batch in data {
        let mut wtxn = env.write_txn()?;
        for value in batch {
            table.put(&mut wtxn, &n.to_be_bytes(), value)?;
            n += 1;
        }
        wtxn.commit()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Entries per second through `Inventory::append`.
fn ours(data: &[Vec<Vec<u8>>]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let config = InventoryConfig { map_size: 4 << 30, ..Default::default() };
    let inv = Inventory::open(dir.path(), ClusterId(1), config)?;
    let db = DbName::new("bench")?;
    let start = Instant::now();
    let mut n = 0;
    for batch in data {
        n += inv.append(&db, 0, batch).context("append")?.len();
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Topics the by-topic append spreads its entries over.
const TOPICS: usize = 1000;

/// Entries per second through `Inventory::append`, each entry with one of `topics`
/// topics in turn (`t/0`, `t/1`, …): what the topic index costs on top.
fn ours_by_topic(data: &[Vec<Vec<u8>>], topics: usize) -> anyhow::Result<f64> {
    let messages: Vec<Vec<Message>> = data
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            let topic =
                |i: usize| Topic::new(format!("t/{}", (b * batch.len() + i) % topics)).expect("topic");
            batch.iter().enumerate().map(|(i, p)| Message::new(topic(i), p.clone())).collect()
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let config = InventoryConfig { map_size: 4 << 30, ..Default::default() };
    let inv = Inventory::open(dir.path(), ClusterId(1), config)?;
    let db = DbName::new("bench")?;
    let start = Instant::now();
    let mut n = 0;
    for batch in &messages {
        n += inv.append(&db, 0, batch).context("append")?.len();
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let p = StoreParams::new(smoke);
    let data = payloads(&p);
    let (mut raw_runs, mut our_runs, mut topic_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..p.repeats {
        raw_runs.push(raw_heed(&data)?);
        our_runs.push(ours(&data)?);
        topic_runs.push(ours_by_topic(&data, TOPICS)?);
    }
    let (raw, our, by_topic) = (median(&raw_runs), median(&our_runs), median(&topic_runs));
    reporter.record(&Measurement {
        scenario: "store",
        name: "shard-log append, durable".into(),
        unit: "entries/s",
        ours: our,
        baseline_name: "raw heed put".into(),
        baseline: raw,
        ratio: our / raw,
        aim: Some(0.8),
        params: json!({
            "batches": p.batches, "batch": p.batch, "entry_bytes": p.entry_bytes, "repeats": p.repeats,
            "durable": true,
        }),
        runs: json!({ "ours": our_runs, "baseline": raw_runs }),
    })?;
    reporter.record(&Measurement {
        scenario: "store",
        name: format!("shard-log append by topic ({TOPICS} topics), durable"),
        unit: "entries/s",
        ours: by_topic,
        baseline_name: "raw heed put".into(),
        baseline: raw,
        ratio: by_topic / raw,
        aim: None,
        params: json!({
            "batches": p.batches, "batch": p.batch, "entry_bytes": p.entry_bytes, "repeats": p.repeats,
            "durable": true, "topics": TOPICS, "topic-less append": our,
        }),
        runs: json!({ "ours": topic_runs, "baseline": raw_runs }),
    })
}
