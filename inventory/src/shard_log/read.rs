//! Reading a shard log by arrival number: pull reads, pages, frontiers and counters.

use std::ops::Bound;

use super::{
    Entry, EntryId, Frontier, FrontierRecord, LogEntry, PullLimits, ReadBatch, ShardLogMeta, ShardLogStats,
    StoredEntry,
};
use crate::error::{InventoryError, Result};
use crate::ids::{DbName, SiteId};
use crate::keys;
use crate::store::{Inventory, decode_record, get_record};

impl Inventory {
    pub fn frontier(&self, db: &DbName, shard: u32) -> Result<Frontier> {
        let prefix = keys::shard(db, shard);
        self.read(|txn| self.frontier_in(txn, &prefix))
    }

    pub(super) fn frontier_in(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        prefix: &[u8],
    ) -> Result<Frontier> {
        let mut frontier = Frontier::default();
        for item in self.tables.log_frontiers.prefix_iter(txn, prefix)? {
            let (key, bytes) = item?;
            let record: FrontierRecord = decode_record(bytes, || keys::describe("log_frontiers", key))?;
            let origin = keys::site_prefix(&key[prefix.len()..]).map(|(site, _)| site).ok_or_else(|| {
                InventoryError::Corrupt {
                    record: keys::describe("log_frontiers", key),
                    source: crate::codec::CodecError::Decode("malformed key".into()),
                }
            })?;
            if record.contiguous > 0 {
                frontier.0.insert(origin, record.contiguous);
            }
        }
        Ok(frontier)
    }

    /// Whether this log already holds every one of `ids` (at or below its origin's
    /// frontier, or held early), so that storing them would add nothing. Read-only: no
    /// durable commit. An id with seq 0 or above the maximum is not held.
    pub fn holds_all(&self, db: &DbName, shard: u32, ids: impl IntoIterator<Item = EntryId>) -> Result<bool> {
        let prefix = keys::shard(db, shard);
        self.read(|txn| {
            let frontier = self.frontier_in(txn, &prefix)?;
            for EntryId { origin, seq } in ids {
                if seq == 0 || seq > super::MAX_SEQ {
                    return Ok(false);
                }
                if seq <= frontier.0.get(&origin).copied().unwrap_or(0) {
                    continue;
                }
                if self.tables.log_early.get(txn, &keys::early(&prefix, origin, seq))?.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Where a pull from `upstream` resumes: the upstream's arrival number below which
    /// this log has received everything it lacked (0: from the start).
    pub fn pull_cursor(&self, db: &DbName, shard: u32, upstream: SiteId) -> Result<u64> {
        let key = keys::frontier(&keys::shard(db, shard), upstream);
        self.read(|txn| {
            Ok(get_record(self.tables.log_cursors, txn, &key, &keys::describe("log_cursors", &key))?
                .unwrap_or_default())
        })
    }

    /// The frontier and counters of a shard log, read in one transaction (so the
    /// frontier describes exactly the entries numbered below `next_arrival`, plus
    /// entries removed by retention).
    pub fn log_position(&self, db: &DbName, shard: u32) -> Result<(Frontier, ShardLogStats)> {
        let key = keys::shard(db, shard);
        self.read(|txn| {
            let frontier = self.frontier_in(txn, &key)?;
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &key, &keys::describe("log_shards", &key))?
                    .unwrap_or_default();
            let stats = ShardLogStats {
                entries: meta.entries,
                bytes: meta.bytes,
                next_arrival: meta.next_arrival,
                own_seq: meta.own_seq,
            };
            Ok((frontier, stats))
        })
    }

    /// Reads, from arrival number `from` on, the entries `wanted` accepts (typically:
    /// those above a receiver's frontier), until `max_bytes` of payload or `max_entries`
    /// entries are taken or `max_scanned` entries looked at. Answers the entries (in
    /// arrival order) and the arrival number to continue from. A corrupt entry is an
    /// error naming it.
    pub fn read_beyond(
        &self,
        db: &DbName,
        shard: u32,
        from: u64,
        wanted: impl Fn(EntryId) -> bool,
        limits: PullLimits,
    ) -> Result<(Vec<Entry>, u64)> {
        let prefix = keys::shard(db, shard);
        let start = keys::with_u64(&prefix, from);
        let end = keys::with_u64(&prefix, u64::MAX);
        self.read(|txn| {
            let mut entries = Vec::new();
            let (mut next, mut bytes, mut scanned) = (from, 0usize, 0usize);
            let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
            for item in self.tables.log_entries.range(txn, &range)? {
                if entries.len() >= limits.max_entries
                    || bytes >= limits.max_bytes
                    || scanned >= limits.max_scanned
                {
                    break;
                }
                let (key, value) = item?;
                let arrival = keys::u64_suffix(&key[prefix.len()..]).unwrap_or(next);
                let stored: StoredEntry = decode_record(value, || keys::describe("log_entries", key))?;
                scanned += 1;
                next = arrival + 1;
                if wanted(stored.entry.id) {
                    bytes += stored.entry.payload.len();
                    entries.push(stored.entry);
                }
            }
            Ok((entries, next))
        })
    }

    /// Reads up to `max` entries in arrival order, starting at arrival number `from`.
    /// A corrupt entry is an error naming it; read from its number + 1 to skip it.
    pub fn read_log(&self, db: &DbName, shard: u32, from: u64, max: usize) -> Result<ReadBatch> {
        self.read_log_within(db, shard, from, max, usize::MAX)
    }

    /// [`Self::read_log`], stopping before an entry that would take the payload bytes
    /// read past `max_bytes` (the first entry is always read): nothing beyond what the
    /// answer carries is decoded.
    pub fn read_log_within(
        &self,
        db: &DbName,
        shard: u32,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch> {
        let prefix = keys::shard(db, shard);
        let start = keys::with_u64(&prefix, from);
        let end = keys::with_u64(&prefix, u64::MAX);
        self.read(|txn| {
            let mut entries = Vec::with_capacity(max.min(1024));
            let (mut next, mut bytes) = (from, 0usize);
            let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
            for item in self.tables.log_entries.range(txn, &range)?.take(max) {
                let (key, value) = item?;
                // The stored value bounds the payload's size before anything is decoded.
                if !entries.is_empty() && bytes.saturating_add(value.len()) > max_bytes {
                    break;
                }
                let arrival = keys::u64_suffix(&key[prefix.len()..]).unwrap_or(next);
                let stored: StoredEntry = decode_record(value, || keys::describe("log_entries", key))?;
                bytes = bytes.saturating_add(value.len());
                entries.push(LogEntry { arrival, entry: stored.entry });
                next = arrival.saturating_add(1);
            }
            Ok(ReadBatch { entries, next })
        })
    }

    /// The arrival number of the oldest entry the log still holds (what retention left),
    /// or the next arrival number when it holds none.
    pub fn log_start(&self, db: &DbName, shard: u32) -> Result<u64> {
        let prefix = keys::shard(db, shard);
        self.read(|txn| {
            if let Some(item) = self.tables.log_entries.prefix_iter(txn, &prefix)?.next() {
                let (key, _) = item?;
                if let Some(arrival) = keys::u64_suffix(&key[prefix.len()..]) {
                    return Ok(arrival);
                }
            }
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &prefix, &keys::describe("log_shards", &prefix))?
                    .unwrap_or_default();
            Ok(meta.next_arrival)
        })
    }

    /// Entry count, bytes and next arrival number of a shard log.
    pub fn log_stats(&self, db: &DbName, shard: u32) -> Result<ShardLogStats> {
        let key = keys::shard(db, shard);
        self.read(|txn| {
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &key, &keys::describe("log_shards", &key))?
                    .unwrap_or_default();
            Ok(ShardLogStats {
                entries: meta.entries,
                bytes: meta.bytes,
                next_arrival: meta.next_arrival,
                own_seq: meta.own_seq,
            })
        })
    }
}
