//! Which db settings win when sites hold different records of one db name: a pure
//! function, used by the view (what the cluster's settings are) and by each site (which
//! of its own records to update or drop).
//!
//! Rules, the same on every site whatever the clocks say:
//! - a **drop** is a tombstone record; the latest drop's HLC (`dropped_at`) ends every
//!   record of the name created at or before it — a db dropped and created again is a
//!   new db, created after the drop, whose records carry that drop (`supersedes`), so
//!   it stays in force when no tombstone is left;
//! - of the records left, the **earliest creation** (HLC, then the lower origin id) is
//!   the db: sites that created the same name at the same moment end with one db;
//! - of that creation's records, the **latest change** (`changed`, see
//!   [`DbRecord::version`]) gives the settings (replication, retention).

use cairn_inventory::{DbRecord, Hlc};

/// What the records of one db name resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The db's current settings, unless it is dropped (and not created again since).
    pub current: Option<DbRecord>,
    /// The latest drop of the name, if any: records created at or before it are dropped.
    pub dropped_at: Option<Hlc>,
    /// The tombstone that made that drop, when it was a tombstone (not a later
    /// creation's `supersedes`): what a holder stores when it drops the db.
    pub tombstone: Option<DbRecord>,
}

/// Resolves the records sites hold of one db name (any order; empty → nothing).
pub fn resolve<'a>(records: impl IntoIterator<Item = &'a DbRecord> + Clone) -> Resolution {
    let drops = records.clone().into_iter().filter(|r| r.dropped).map(|r| r.changed);
    let dropped_at = drops.chain(records.clone().into_iter().filter_map(|r| r.supersedes)).max();
    let alive = || records.clone().into_iter().filter(|r| !r.dropped && !ended_by(r, dropped_at));
    let current = alive()
        .map(DbRecord::incarnation)
        .min()
        .and_then(|first| alive().filter(|r| r.incarnation() == first).max_by_key(|r| r.version()).cloned());
    let tombstone = records
        .into_iter()
        .filter(|r| r.dropped && Some(r.changed) == dropped_at)
        .max_by(|a, b| {
            // A total order, so every site picks the same one whatever the input order.
            let key = |r: &DbRecord| {
                (r.version(), r.incarnation(), r.signed_bytes(), r.seal.as_ref().map(|s| s.signature.clone()))
            };
            key(a).cmp(&key(b))
        })
        .cloned();
    Resolution { current, dropped_at, tombstone }
}

/// Whether a drop at `dropped_at` ends `record` (it was created at or before the drop).
pub fn ended_by(record: &DbRecord, dropped_at: Option<Hlc>) -> bool {
    dropped_at.is_some_and(|at| record.created <= at)
}

#[cfg(test)]
mod tests {
    use cairn_inventory::DbSettings;
    use cairn_inventory::{DbName, Retention, SiteId};
    use proptest::prelude::*;

    use super::*;

    fn hlc(ms: u64) -> Hlc {
        Hlc { wall_ms: ms, logical: 0 }
    }

    fn record(created: u64, origin: SiteId) -> DbRecord {
        DbRecord::new(
            DbName::new("d").unwrap(),
            DbSettings::new(4, 2, Retention::default()).unwrap(),
            hlc(created),
            origin,
        )
    }

    fn changed(mut r: DbRecord, at: u64, replication: u32) -> DbRecord {
        r.changed = hlc(at);
        r.settings.replication = cairn_inventory::Replication::new(replication).unwrap();
        r
    }

    fn dropped(mut r: DbRecord, at: u64) -> DbRecord {
        r.changed = hlc(at);
        r.dropped = true;
        r
    }

    #[test]
    fn the_earliest_creation_then_the_latest_change_wins() {
        let (a, b) = (SiteId::random(), SiteId::random());
        let first = record(10, a);
        let second = record(12, b);
        let raised = changed(first.clone(), 20, 3);
        let r = resolve([&second, &first, &raised]);
        assert_eq!(r.current, Some(raised));
        assert_eq!(r.dropped_at, None);
    }

    #[test]
    fn a_drop_ends_every_earlier_creation_and_a_later_one_is_a_new_db() {
        let (a, b) = (SiteId::random(), SiteId::random());
        let old = record(10, a);
        let concurrent = record(11, b);
        let tomb = dropped(old.clone(), 30);
        let r = resolve([&old, &concurrent, &tomb]);
        assert_eq!(r, Resolution { tombstone: Some(tomb.clone()), current: None, dropped_at: Some(hlc(30)) });
        let mut again = record(31, b);
        again.supersedes = Some(hlc(30));
        let r = resolve([&old, &tomb, &again]);
        assert_eq!(r.tombstone, Some(tomb.clone()), "the tombstone that made the drop");
        assert_eq!(r.current, Some(again.clone()));
        assert_eq!(r.dropped_at, Some(hlc(30)));
        // Every tombstone replaced by the new db's record: a site that was down comes
        // back with the old db, which stays dropped.
        let r = resolve([&old, &again]);
        assert_eq!(r, Resolution { tombstone: None, current: Some(again), dropped_at: Some(hlc(30)) });
    }

    fn arb_record(sites: Vec<SiteId>) -> impl Strategy<Value = DbRecord> {
        (0..sites.len(), 1u64..50, 0u64..50, 1u32..5, any::<bool>(), prop::option::of(0u64..50)).prop_map(
            move |(site, created, later, replication, drop, supersedes)| {
                let mut r = changed(record(created, sites[site]), created + later, replication);
                r.dropped = drop && later > 0;
                r.supersedes = supersedes.filter(|s| *s < created).map(hlc);
                r
            },
        )
    }

    proptest! {
        #[test]
        fn every_order_of_the_same_records_resolves_the_same(
            records in prop::collection::vec(arb_record((0..4).map(|_| SiteId::random()).collect()), 0..12),
            seed in any::<u64>(),
        ) {
            let mut shuffled = records.clone();
            let n = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % n);
            shuffled.reverse();
            let r = resolve(&records);
            prop_assert_eq!(&r, &resolve(&shuffled));
            if let Some(current) = &r.current {
                prop_assert!(!current.dropped);
                prop_assert!(!ended_by(current, r.dropped_at));
                // No live record of an earlier creation, nor a later change of this one.
                for other in records.iter().filter(|o| !o.dropped && !ended_by(o, r.dropped_at)) {
                    prop_assert!(other.incarnation() >= current.incarnation());
                    if other.incarnation() == current.incarnation() {
                        prop_assert!(other.version() <= current.version());
                    }
                }
            } else {
                prop_assert!(records.iter().all(|o| o.dropped || ended_by(o, r.dropped_at)));
            }
        }
    }
}
