//! Wakes whoever waits on a shard log (follow streams) when it grows.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use cairn_inventory::DbName;
use tokio::sync::watch;

/// One watch channel per shard log, made on first use.
#[derive(Debug, Default)]
pub struct LogSignals {
    shards: Mutex<HashMap<(DbName, u32), watch::Sender<u64>>>,
}

impl LogSignals {
    fn sender(&self, db: &DbName, shard: u32) -> watch::Sender<u64> {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.entry((db.clone(), shard)).or_insert_with(|| watch::channel(0).0).clone()
    }

    /// Says that `(db, shard)`'s log grew.
    pub fn notify(&self, db: &DbName, shard: u32) {
        self.sender(db, shard).send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes when `(db, shard)`'s log grows. Subscribe before reading
    /// the log, so no growth between the read and the wait is missed.
    pub fn subscribe(&self, db: &DbName, shard: u32) -> watch::Receiver<u64> {
        self.sender(db, shard).subscribe()
    }
}
