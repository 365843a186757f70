//! The site's dbs and replicas.

use heed::RwTxn;

use crate::error::{InventoryError, Result};
use crate::ids::DbName;
use crate::keys;
use crate::records::{DbRecord, ReplicaRecord, ReplicaState};
use crate::store::{Inventory, decode_or_skip, get_record, now_ms, put_record};

impl Inventory {
    /// Stores a db's settings (creating or replacing them).
    pub fn put_db(&self, db: &DbRecord) -> Result<()> {
        self.write(|txn| put_record(self.tables.dbs, txn, &keys::db(&db.name), db, "db record"))
    }

    /// A db's settings, if this site knows the db and it is not dropped.
    pub fn db(&self, name: &DbName) -> Result<Option<DbRecord>> {
        Ok(self.db_record(name)?.filter(|d| !d.dropped))
    }

    /// This site's record of a db, tombstone or not.
    pub fn db_record(&self, name: &DbName) -> Result<Option<DbRecord>> {
        self.read(|txn| {
            get_record(self.tables.dbs, txn, &keys::db(name), &keys::describe("dbs", &keys::db(name)))
        })
    }

    /// Every db this site knows and has not dropped, by name. Corrupt records are
    /// skipped with a warning.
    pub fn dbs(&self) -> Result<Vec<DbRecord>> {
        Ok(self.db_records()?.into_iter().filter(|d| !d.dropped).collect())
    }

    /// Every db record this site keeps, tombstones of dropped dbs included (what it
    /// gossips), by name.
    pub fn db_records(&self) -> Result<Vec<DbRecord>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in self.tables.dbs.iter(txn)? {
                let (key, bytes) = item?;
                out.extend(decode_or_skip("dbs", key, bytes));
            }
            Ok(out)
        })
    }

    /// Drops a db here: its record becomes `tombstone` (which must say `dropped`), and
    /// its replicas, shard logs and pending plan (cancelled, into the history) go, in
    /// one transaction. Answers how many replicas were deleted.
    pub fn drop_db(&self, tombstone: &DbRecord) -> Result<usize> {
        if !tombstone.dropped {
            return Err(InventoryError::InvalidSetting {
                what: "tombstone",
                why: format!("the record of db {} does not say dropped", tombstone.name),
            });
        }
        let prefix = keys::db(&tombstone.name);
        self.write(|txn| {
            let pending = self.pending_in(txn, &prefix)?;
            self.apply(txn, &tombstone.name, crate::plan_machine::cancel(pending.as_ref(), now_ms()))?;
            let replicas = delete_prefix(self.tables.replicas, txn, &prefix)?;
            self.drop_log_in(txn, &prefix)?;
            put_record(self.tables.dbs, txn, &prefix, tombstone, "db record")?;
            Ok(replicas as usize)
        })
    }

    /// Forgets a db: its settings, replicas, shard logs and pending plan, in one
    /// transaction. The plan history stays. Answers whether the db was known.
    pub fn remove_db(&self, name: &DbName) -> Result<bool> {
        let prefix = keys::db(name);
        self.write(|txn| {
            let known = self.tables.dbs.delete(txn, &prefix)?;
            self.tables.plans.delete(txn, &prefix)?;
            delete_prefix(self.tables.replicas, txn, &prefix)?;
            self.drop_log_in(txn, &prefix)?;
            Ok(known)
        })
    }

    /// Creates or updates the local replica of `(db, shard)`. The db must be known and
    /// the shard in range. Answers the stored record. A new replica starts from an empty
    /// log: anything left under its key by an earlier replica of the shard (a frontier
    /// raised by a pull that finished after its removal, say) is cleared in the same
    /// transaction, so it cannot pass for data the new replica holds.
    pub fn set_replica(&self, db: &DbName, shard: u32, state: ReplicaState) -> Result<ReplicaRecord> {
        let key = keys::shard(db, shard);
        self.write(|txn| {
            let settings: DbRecord = get_record(self.tables.dbs, txn, &keys::db(db), "db record")?
                .filter(|d: &DbRecord| !d.dropped)
                .ok_or_else(|| InventoryError::UnknownDb(db.clone()))?;
            if !settings.settings.shards.contains(shard) {
                return Err(InventoryError::ShardOutOfRange {
                    db: db.clone(),
                    shard,
                    shards: settings.settings.shards.get(),
                });
            }
            let now = now_ms();
            let old: Option<ReplicaRecord> =
                get_record(self.tables.replicas, txn, &key, &keys::describe("replicas", &key))?;
            if old.is_none() {
                self.drop_log_in(txn, &key)?;
            }
            let record = ReplicaRecord {
                db: db.clone(),
                shard,
                state: state.clone(),
                created_ms: old.map_or(now, |o| o.created_ms),
                updated_ms: now,
            };
            put_record(self.tables.replicas, txn, &key, &record, "replica record")?;
            Ok(record)
        })
    }

    /// The local replica of `(db, shard)`, if any.
    pub fn replica(&self, db: &DbName, shard: u32) -> Result<Option<ReplicaRecord>> {
        let key = keys::shard(db, shard);
        self.read(|txn| get_record(self.tables.replicas, txn, &key, &keys::describe("replicas", &key)))
    }

    /// Every local replica, of one db or of all. Corrupt records are skipped with a
    /// warning.
    pub fn replicas(&self, db: Option<&DbName>) -> Result<Vec<ReplicaRecord>> {
        let prefix = db.map(keys::db);
        self.read(|txn| {
            let mut out = Vec::new();
            // LMDB refuses an empty key, so "all" is a plain scan rather than an empty prefix.
            let iter: Box<dyn Iterator<Item = RawItem<'_>>> = match &prefix {
                Some(prefix) => Box::new(self.tables.replicas.prefix_iter(txn, prefix)?),
                None => Box::new(self.tables.replicas.iter(txn)?),
            };
            for item in iter {
                let (key, bytes) = item?;
                out.extend(decode_or_skip("replicas", key, bytes));
            }
            Ok(out)
        })
    }

    /// Deletes the local replica of `(db, shard)` and its shard log, in one transaction.
    /// Answers whether there was a replica. Running it twice is the same as once.
    pub fn remove_replica(&self, db: &DbName, shard: u32) -> Result<bool> {
        let key = keys::shard(db, shard);
        self.write(|txn| {
            let existed = self.tables.replicas.delete(txn, &key)?;
            self.drop_log_in(txn, &key)?;
            Ok(existed)
        })
    }
}

/// One raw key/value pair from an LMDB scan.
type RawItem<'t> = heed::Result<(&'t [u8], &'t [u8])>;

/// Deletes every key of `table` that starts with `prefix`.
pub(crate) fn delete_prefix(table: crate::store::Table, txn: &mut RwTxn<'_>, prefix: &[u8]) -> Result<u64> {
    let mut iter = table.prefix_iter_mut(txn, prefix)?;
    let mut n = 0;
    while iter.next().transpose()?.is_some() {
        // SAFETY: no reference into the database is kept across the deletion.
        unsafe { iter.del_current()? };
        n += 1;
    }
    Ok(n)
}
