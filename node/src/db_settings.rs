//! Changing and dropping dbs: the pure rules, and the thin step that brings a site's own
//! db records in line with the cluster view.
//!
//! A db's settings are versioned records (see `cairn_gossip::settings`). An operator's
//! change or drop is written by the site the request reached, as a newer record (a
//! tombstone for a drop), and gossiped. Every other site holding the db then takes it up
//! in [`sync_local`]: a newer version of its settings replaces its record (holders apply
//! retention from their own record); a drop deletes its replicas, their data and its
//! pending plan, and leaves a tombstone that it gossips in turn. Adding or trimming
//! replicas to a new replication factor is automation's repair (or `ctl plan apply
//! repair`), like any other shard below or above its factor.

use cairn_gossip::ClusterView;
use cairn_gossip::settings::ended_by;
use cairn_inventory::{DbRecord, Hlc, Inventory, InventoryError, Replication, Retention};

/// `base` with a new replication factor and/or retention, changed at `at`; `None` when
/// that changes nothing.
pub fn alter(
    base: &DbRecord,
    replication: Option<Replication>,
    retention: Option<Retention>,
    at: Hlc,
) -> Option<DbRecord> {
    let mut next = base.clone();
    next.settings.replication = replication.unwrap_or(base.settings.replication);
    next.settings.retention = retention.unwrap_or(base.settings.retention);
    if next.same_settings(base) {
        return None;
    }
    next.changed = after(at, base.changed);
    next.seal = None;
    Some(next)
}

/// `at`, or if the record was already changed at or after it (a clock behind), the next
/// reading after that change: a change always sorts after what it changes.
fn after(at: Hlc, floor: Hlc) -> Hlc {
    if at > floor { at } else { floor.tick(at.wall_ms) }
}

/// `db` dropped at `at` (a tombstone of it).
pub fn tombstone(db: &DbRecord, at: Hlc) -> DbRecord {
    let mut dead = db.clone();
    dead.dropped = true;
    dead.changed = after(at, db.changed);
    dead.seal = None;
    dead
}

/// What a site does to one of its db records so it agrees with the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalUpdate {
    /// A newer version of the settings of the same db: store it.
    Adopt(DbRecord),
    /// The db was dropped: drop it here (this tombstone).
    Drop(DbRecord),
}

/// The updates that bring `local` (a site's db records) in line with `view`.
pub fn local_updates(local: &[DbRecord], view: &ClusterView) -> Vec<LocalUpdate> {
    let mut out = Vec::new();
    for record in local.iter().filter(|r| !r.dropped) {
        let drop = view.dropped.iter().find(|d| d.name == record.name);
        if let Some(drop) = drop
            && ended_by(record, Some(drop.at))
        {
            // The operator's sealed tombstone when there is one (so this site gossips
            // it in turn); else the drop was a later creation's `supersedes`, which that
            // creation carries: the tombstone made here stays local.
            let dead = drop.tombstone.clone().unwrap_or_else(|| {
                let mut dead = record.clone();
                dead.dropped = true;
                dead.changed = drop.at;
                dead.seal = None;
                dead
            });
            out.push(LocalUpdate::Drop(dead));
            continue;
        }
        // A change never changes the shard count or routing: a record that does is
        // nobody's change (the operator signs what a site prepared; that site could
        // have lied about what it did not ask to change).
        if let Some(current) = view.db(&record.name).map(|d| d.record())
            && current.incarnation() == record.incarnation()
            && current.version() > record.version()
            && current.settings.shards == record.settings.shards
            && current.settings.routing == record.settings.routing
        {
            out.push(LocalUpdate::Adopt(current));
        }
    }
    out
}

/// Applies [`local_updates`] to `inv`; answers how many were applied.
pub fn sync_local(inv: &Inventory, view: &ClusterView) -> Result<usize, InventoryError> {
    let updates = local_updates(&inv.db_records()?, view);
    for update in &updates {
        match update {
            LocalUpdate::Adopt(record) => {
                tracing::info!(db = %record.name, replication = record.settings.replication.get(), "db settings changed");
                inv.put_db(record)?;
            }
            LocalUpdate::Drop(tombstone) => {
                let replicas = inv.drop_db(tombstone)?;
                tracing::info!(db = %tombstone.name, replicas, "db dropped; its replicas here are deleted");
            }
        }
    }
    Ok(updates.len())
}

#[cfg(test)]
mod tests {
    use cairn_gossip::view::{DbView, DroppedDb};
    use cairn_inventory::DbSettings;
    use cairn_inventory::{DbName, SiteId};

    use super::*;

    fn hlc(ms: u64) -> Hlc {
        Hlc { wall_ms: ms, logical: 0 }
    }

    fn record(name: &str, created: u64) -> DbRecord {
        DbRecord::new(
            DbName::new(name).unwrap(),
            DbSettings::new(4, 2, Retention::default()).unwrap(),
            hlc(created),
            SiteId(1),
        )
    }

    fn view(dbs: &[&DbRecord], dropped: &[(&str, u64)]) -> ClusterView {
        ClusterView {
            revocations: None,
            site: SiteId(1),
            sites: Vec::new(),
            dbs: dbs
                .iter()
                .map(|r| DbView {
                    seal: None,
                    name: r.name.clone(),
                    settings: r.settings,
                    created: r.created,
                    origin: r.origin,
                    changed: r.changed,
                    supersedes: r.supersedes,
                    placement: Vec::new(),
                })
                .collect(),
            dropped: dropped
                .iter()
                .map(|(n, at)| DroppedDb { tombstone: None, name: DbName::new(*n).unwrap(), at: hlc(*at) })
                .collect(),
            plans: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn alter_changes_only_what_is_given_and_always_moves_the_version_forward() {
        let base = record("a", 10);
        let factor = |n| Some(Replication::new(n).unwrap());
        assert_eq!(alter(&base, factor(2), None, hlc(20)), None, "same factor: nothing to change");
        let raised = alter(&base, factor(3), None, hlc(20)).unwrap();
        assert_eq!(
            (raised.replication(), raised.changed, raised.settings.retention),
            (3, hlc(20), base.settings.retention)
        );
        // A clock behind the last change still orders after it.
        let behind = alter(&raised, factor(1), None, hlc(5)).unwrap();
        assert!(behind.changed > raised.changed);
        let dead = tombstone(&raised, hlc(30));
        assert!(dead.dropped && dead.changed == hlc(30) && dead.incarnation() == base.incarnation());
    }

    #[test]
    fn a_site_adopts_newer_settings_and_drops_what_the_view_dropped() {
        let kept = record("kept", 10);
        let mut newer = kept.clone();
        newer.settings.replication = Replication::new(3).unwrap();
        newer.changed = hlc(20);
        let gone = record("gone", 10);
        let recreated = record("back", 40);
        let old_back = record("back", 10);
        let local = [kept.clone(), gone.clone(), old_back.clone(), tombstone(&record("dead", 1), hlc(2))];

        let v = view(&[&newer, &recreated], &[("gone", 30), ("back", 30), ("dead", 2)]);
        let updates = local_updates(&local, &v);
        let mut gone_dead = gone.clone();
        gone_dead.dropped = true;
        gone_dead.changed = hlc(30);
        let mut back_dead = old_back.clone();
        back_dead.dropped = true;
        back_dead.changed = hlc(30);
        assert_eq!(
            updates,
            vec![
                LocalUpdate::Adopt(newer.clone()),
                LocalUpdate::Drop(gone_dead),
                LocalUpdate::Drop(back_dead)
            ]
        );
        // Up to date: nothing to do; an older version in the view is never adopted.
        assert!(local_updates(&[newer.clone()], &view(&[&newer], &[])).is_empty());
        assert!(local_updates(&[newer.clone()], &view(&[&kept], &[])).is_empty());
        // Another creation of the name (same settings, lost the tie) is left alone.
        let mut twin = kept.clone();
        twin.created = hlc(11);
        assert!(local_updates(&[twin], &view(&[&newer], &[])).is_empty());
    }
}
