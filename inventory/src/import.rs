//! Bringing placement in from outside: a site's db settings and replicas, as another
//! source (a dump of the cluster view, or a live site's view) records them, written in
//! one transaction — all of it or, on any contradiction, nothing.
//!
//! Used to recover a site whose inventory was lost while its peers live on: each
//! imported replica starts `catching_up` from the other holders, so the replicator
//! copies the data back.

use crate::error::{InventoryError, Result};
use crate::ids::SiteId;
use crate::keys;
use crate::records::{DbRecord, ReplicaRecord, ReplicaState};
use crate::store::{Inventory, get_record, now_ms, put_record};

/// One db to import: its settings and the shards this site holds, each with the sites
/// to copy it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDb {
    /// The db's settings.
    pub record: DbRecord,
    /// `(shard, upstreams)` for each replica this site holds.
    pub replicas: Vec<(u32, Vec<SiteId>)>,
}

/// What an import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Db records written (new, or a newer version of the same creation).
    pub dbs_written: usize,
    /// Replicas created, catching up.
    pub replicas_written: usize,
    /// Replicas already there, left as they were.
    pub replicas_present: usize,
}

impl Inventory {
    /// Writes `dbs` in one transaction. A db the inventory already holds must be the same
    /// creation (same creation HLC and origin) and not dropped here; the newer version of
    /// its settings is kept. A replica already present is left as it is (so importing
    /// twice changes nothing); a new one is created `catching_up` from its upstreams.
    /// Any contradiction — another creation of the name, a dropped db, a shard out of
    /// range, a replica with no upstream — fails the whole import, naming the entry, and
    /// nothing is written.
    pub fn import(&self, dbs: &[ImportedDb]) -> Result<ImportOutcome> {
        self.write(|txn| {
            let mut outcome = ImportOutcome::default();
            for ImportedDb { record, replicas } in dbs {
                let name = &record.name;
                let conflict =
                    |why: String| InventoryError::ImportConflict { entry: format!("db {name}"), why };
                if record.dropped {
                    return Err(conflict("the placement lists it as dropped".into()));
                }
                let key = keys::db(name);
                let held: Option<DbRecord> = get_record(self.tables.dbs, txn, &key, "db record")?;
                match held {
                    Some(h) if h.incarnation() != record.incarnation() => {
                        return Err(conflict(format!(
                            "this site holds another creation of the name (created {:?} by {}), not the one \
                             imported (created {:?} by {})",
                            h.created, h.origin, record.created, record.origin
                        )));
                    }
                    Some(h) if h.dropped => return Err(conflict("this site has dropped it".into())),
                    Some(h) if h.version() >= record.version() => {}
                    _ => {
                        put_record(self.tables.dbs, txn, &key, record, "db record")?;
                        outcome.dbs_written += 1;
                    }
                }
                for (shard, upstreams) in replicas {
                    let entry = || format!("db {name} shard {shard}");
                    if !record.settings.shards.contains(*shard) {
                        return Err(InventoryError::ImportConflict {
                            entry: entry(),
                            why: format!("the db has {} shards", record.settings.shards),
                        });
                    }
                    if upstreams.is_empty() || upstreams.contains(&self.identity().site_id) {
                        return Err(InventoryError::ImportConflict {
                            entry: entry(),
                            why: "it needs at least one other site to copy from".into(),
                        });
                    }
                    let key = keys::shard(name, *shard);
                    let present: Option<ReplicaRecord> =
                        get_record(self.tables.replicas, txn, &key, "replica")?;
                    if present.is_some() {
                        outcome.replicas_present += 1;
                        continue;
                    }
                    self.drop_log_in(txn, &key)?;
                    let now = now_ms();
                    let replica = ReplicaRecord {
                        db: name.clone(),
                        shard: *shard,
                        state: ReplicaState::CatchingUp { upstreams: upstreams.clone() },
                        created_ms: now,
                        updated_ms: now,
                    };
                    put_record(self.tables.replicas, txn, &key, &replica, "replica record")?;
                    outcome.replicas_written += 1;
                }
            }
            Ok(outcome)
        })
    }
}
