//! A replicant's copies: which shards it keeps, from the dbs it follows and the view.
//!
//! A replicant (`--role replicant --follow DB`) keeps a read-only copy (`following`) of
//! every shard of each followed db — the replicator fills it from a core replica and
//! keeps it current. [`changes`] (pure) says what to learn, add and remove; [`sync`]
//! applies it each executor round, so a db created after the replicant started is
//! followed once the view shows it, and a db no longer followed is let go. A core site
//! follows nothing: copies left from a time it was a replicant are removed.

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, DbRecord, Inventory, InventoryError, ReplicaRecord, ReplicaState};

/// One thing to do to the local inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store the db's settings as the view has them (a followed db not known here yet).
    LearnDb(DbRecord),
    /// Make a following copy of the shard.
    Add {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
    },
    /// Delete the copy (the db is no longer followed).
    Remove {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
    },
}

/// What `follow` asks of a site holding `records` (its db records, tombstones
/// included) and `replicas`, given `view` (pure). Only followed dbs the view holds are
/// added; a followed db whose record here belongs to another creation is left to the
/// settings sync (which drops records the view's drop ends) until that is done. Only
/// `following` copies are ever removed.
pub fn changes(
    follow: &[DbName],
    records: &[DbRecord],
    replicas: &[ReplicaRecord],
    view: &ClusterView,
) -> Vec<Change> {
    let mut out = Vec::new();
    for name in follow {
        let Some(db) = view.db(name) else { continue };
        let wanted = db.record();
        match records.iter().find(|r| &r.name == name) {
            Some(own) if !own.dropped => {
                if own.incarnation() != wanted.incarnation() {
                    continue;
                }
            }
            _ => out.push(Change::LearnDb(wanted)),
        }
        for shard in 0..db.shards() {
            if !replicas.iter().any(|r| &r.db == name && r.shard == shard) {
                out.push(Change::Add { db: name.clone(), shard });
            }
        }
    }
    for r in replicas {
        if matches!(r.state, ReplicaState::Following { .. }) && !follow.contains(&r.db) {
            out.push(Change::Remove { db: r.db.clone(), shard: r.shard });
        }
    }
    out
}

/// Applies [`changes`] to `inv`. Answers whether any copy was added or removed (so the
/// replicator should look again).
pub fn sync(inv: &Inventory, follow: &[DbName], view: &ClusterView) -> Result<bool, InventoryError> {
    let todo = changes(follow, &inv.db_records()?, &inv.replicas(None)?, view);
    let mut touched = false;
    for change in todo {
        match change {
            Change::LearnDb(record) => {
                tracing::info!(db = %record.name, shards = record.settings.shards.get(), "following a db");
                inv.put_db(&record)?;
            }
            Change::Add { db, shard } => {
                inv.set_replica(&db, shard, ReplicaState::Following { caught_up: false })?;
                touched = true;
            }
            Change::Remove { db, shard } => {
                tracing::info!(%db, shard, "no longer following: copy removed");
                inv.remove_replica(&db, shard)?;
                touched = true;
            }
        }
    }
    Ok(touched)
}
