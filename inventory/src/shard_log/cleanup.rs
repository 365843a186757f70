//! Removing from a shard log: dropping it whole, and retention's clean-up.

use super::write::{LogTxn, topic_key};
use super::{CleanupOutcome, ShardLogMeta, StoredEntry};
use heed::RwTxn;

use crate::error::Result;
use crate::ids::DbName;
use crate::keys;
use crate::settings::Retention;
use crate::store::{Inventory, decode_record, put_record};

impl Inventory {
    /// Deletes a shard's whole log (entries, frontier and indexes). Arrival numbers and
    /// this site's own seqs continue where they were if the log is filled again.
    pub fn drop_log(&self, db: &DbName, shard: u32) -> Result<()> {
        let key = keys::shard(db, shard);
        self.write(|txn| self.drop_log_in(txn, &key))
    }

    pub(crate) fn drop_log_in(&self, txn: &mut RwTxn<'_>, shard_key: &[u8]) -> Result<()> {
        for table in [
            self.tables.log_entries,
            self.tables.log_frontiers,
            self.tables.log_early,
            self.tables.log_cursors,
            self.tables.log_by_origin,
            self.tables.log_topics,
            self.tables.log_producers,
        ] {
            crate::catalog::delete_prefix(table, txn, shard_key)?;
        }
        self.reset_shard_metas(txn, shard_key)
    }

    /// Zeroes the entry and byte counts of every shard log under `prefix`, keeping the
    /// arrival and own-seq counters.
    pub(crate) fn reset_shard_metas(&self, txn: &mut RwTxn<'_>, prefix: &[u8]) -> Result<()> {
        let mut metas = Vec::new();
        for item in self.tables.log_shards.prefix_iter(txn, prefix)? {
            let (key, bytes) = item?;
            let meta: ShardLogMeta = decode_record(bytes, || keys::describe("log_shards", key))?;
            metas.push((key.to_vec(), meta));
        }
        for (key, meta) in metas {
            let meta = ShardLogMeta { entries: 0, bytes: 0, ..meta };
            put_record(self.tables.log_shards, txn, &key, &meta, "shard log counters")?;
        }
        Ok(())
    }

    /// Removes entries that `retention` no longer keeps, oldest first, at most `limit`
    /// per call (one transaction). Entries are judged by local arrival time against
    /// `now_ms`. The frontier is unchanged: removed entries still count as held.
    pub fn clean_up(
        &self,
        db: &DbName,
        shard: u32,
        retention: Retention,
        now_ms: u64,
        limit: usize,
    ) -> Result<CleanupOutcome> {
        self.write(|txn| {
            let mut log = LogTxn::begin(self, txn, db, shard)?;
            let mut outcome = CleanupOutcome::default();
            let mut doomed = Vec::new();
            let mut bytes_left = log.meta.bytes;
            for item in self.tables.log_entries.prefix_iter(txn, &log.shard_key)? {
                let (key, bytes) = item?;
                let Some(stored) = crate::store::decode_or_skip::<StoredEntry>("log_entries", key, bytes)
                else {
                    continue;
                };
                let too_old =
                    retention.max_age_ms.is_some_and(|age| stored.arrived_ms.saturating_add(age) <= now_ms);
                let too_big = retention.max_bytes.is_some_and(|max| bytes_left > max);
                if !too_old && !too_big {
                    break;
                }
                if doomed.len() == limit {
                    outcome.more = true;
                    break;
                }
                let len = stored.entry.payload.len() as u64;
                bytes_left = bytes_left.saturating_sub(len);
                outcome.removed += 1;
                outcome.removed_bytes += len;
                doomed.push((key.to_vec(), stored.entry.id, stored.entry.topic, stored.entry.producer));
            }
            for (key, id, topic, producer) in &doomed {
                self.tables.log_entries.delete(txn, key)?;
                self.tables.log_by_origin.delete(txn, &keys::early(&log.shard_key, id.origin, id.seq))?;
                self.tables.log_topics.delete(txn, &topic_key(&log.shard_key, topic, *id))?;
                if let Some(stamp) = producer {
                    let key = keys::producer(&log.shard_key, &stamp.name, stamp.seq);
                    // Only the index entry that names this copy goes.
                    if self.tables.log_producers.get(txn, &key)?.and_then(keys::split_id_value)
                        == Some((id.origin, id.seq))
                    {
                        self.tables.log_producers.delete(txn, &key)?;
                    }
                }
            }
            log.meta.entries = log.meta.entries.saturating_sub(outcome.removed);
            log.meta.bytes = bytes_left;
            log.commit(txn)?;
            Ok(outcome)
        })
    }
}
