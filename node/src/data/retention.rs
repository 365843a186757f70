//! Retention: each site removes from its own replicas the entries its dbs' retention no
//! longer keeps (older than `max_age`, or beyond `max_bytes` per shard, oldest first).
//!
//! Clean-up runs every `every` (one second by default) in bounded steps: each LMDB write
//! transaction removes at most `per_txn` entries, and a round runs at most `max_txns` of
//! them before yielding, so no long transaction holds up writes. An entry is therefore
//! gone within about a second of expiring (longer only while a backlog is worked off).
//! Removed entries still count as held in the shard's frontier, so a replica catching up
//! from a cleaned one ends ready with what that one holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_inventory::{Inventory, InventoryError, now_ms};
use cairn_transport::RetentionRemoved;

/// Bounds of one clean-up round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Time between rounds.
    pub every: Duration,
    /// Entries removed per write transaction, at most.
    pub per_txn: usize,
    /// Write transactions per round, at most.
    pub max_txns: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { every: Duration::from_secs(1), per_txn: 4096, max_txns: 64 }
    }
}

/// What retention removed on this site since it started (live counters).
#[derive(Debug, Default)]
pub struct RetentionCounters {
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl RetentionCounters {
    /// The totals so far.
    pub fn totals(&self) -> RetentionRemoved {
        RetentionRemoved {
            entries: self.entries.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn add(&self, round: RetentionRemoved) {
        self.entries.fetch_add(round.entries, Ordering::Relaxed);
        self.bytes.fetch_add(round.bytes, Ordering::Relaxed);
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// What it removed.
    pub removed: RetentionRemoved,
    /// Whether it stopped at `max_txns` with entries still due.
    pub more: bool,
}

/// One clean-up round over every local replica of every db with a retention limit, at
/// `now_ms` (blocking: LMDB transactions).
pub fn clean_round(inv: &Inventory, config: &RetentionConfig, now_ms: u64) -> Result<Round, InventoryError> {
    let mut round = Round::default();
    let mut txns = 0;
    for db in inv.dbs()?.into_iter().filter(|d| d.settings.retention.is_limited()) {
        for replica in inv.replicas(Some(&db.name))? {
            loop {
                if txns == config.max_txns {
                    round.more = true;
                    return Ok(round);
                }
                txns += 1;
                let outcome =
                    inv.clean_up(&db.name, replica.shard, db.settings.retention, now_ms, config.per_txn)?;
                round.removed.entries += outcome.removed;
                round.removed.bytes += outcome.removed_bytes;
                if !outcome.more {
                    break;
                }
            }
        }
    }
    Ok(round)
}

/// Runs clean-up rounds until the task is dropped; a round with work left is followed
/// at once by the next.
pub async fn run(inventory: Arc<Inventory>, config: RetentionConfig, counters: Arc<RetentionCounters>) {
    loop {
        let inv = inventory.clone();
        let result = crate::supervisor::blocking(move || clean_round(&inv, &config, now_ms())).await;
        let more = match result {
            Ok(round) => {
                if round.removed.entries > 0 {
                    tracing::debug!(
                        entries = round.removed.entries,
                        bytes = round.removed.bytes,
                        "retention removed entries"
                    );
                }
                counters.add(round.removed);
                round.more
            }
            Err(error) => {
                tracing::warn!(%error, "retention clean-up failed; retrying next round");
                false
            }
        };
        if !more {
            tokio::time::sleep(config.every).await;
        }
    }
}
