//! Pulls between two real inventories: `read_beyond` on the upstream, `insert_pulled`
//! on the receiver, interrupted and resumed from the stored cursor, in random shapes.

use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Entry, Hlc, Inventory, InventoryConfig, InventoryError,
    PullLimits, ReplicaState, Retention, SiteId,
};
use proptest::prelude::*;

fn open(dir: &std::path::Path) -> Inventory {
    let inv = Inventory::open(dir, ClusterId(7), InventoryConfig::default()).unwrap();
    let db = DbName::new("d").unwrap();
    let record = DbRecord {
        seal: None,
        name: db.clone(),
        settings: DbSettings::new(1, 2, Retention::default()).expect("settings in range"),
        created: Hlc::default(),
        origin: SiteId(1),
        changed: Hlc::default(),
        dropped: false,
        supersedes: None,
    };
    inv.put_db(&record).unwrap();
    if inv.replica(&db, 0).unwrap().is_none() {
        inv.set_replica(&db, 0, ReplicaState::Ready).unwrap();
    }
    inv
}

fn sorted_ids(inv: &Inventory, db: &DbName) -> Vec<(SiteId, u64)> {
    let batch = inv.read_log(db, 0, 0, usize::MAX).unwrap();
    let mut ids: Vec<_> = batch.entries.iter().map(|e| (e.entry.id.origin, e.entry.id.seq)).collect();
    ids.sort();
    ids
}

/// Pulls from `up` into `down` until `stop_after` batches (or the end), with the
/// cursor and frontier `down` has stored. Answers the number of entries shipped.
fn pull(up: &Inventory, down: &Inventory, db: &DbName, limits: PullLimits, stop_after: usize) -> usize {
    let upstream = up.identity().site_id;
    let mut cursor = down.pull_cursor(db, 0, upstream).unwrap();
    let end = up.log_stats(db, 0).unwrap().next_arrival;
    let mut shipped = 0;
    for _ in 0..stop_after {
        if cursor >= end {
            break;
        }
        let theirs = down.frontier(db, 0).unwrap();
        let (entries, next): (Vec<Entry>, u64) =
            up.read_beyond(db, 0, cursor, |id| id.seq > theirs.get(id.origin), limits).unwrap();
        shipped += entries.len();
        let outcome = down.insert_pulled(db, 0, &entries, Some((upstream, next))).unwrap();
        assert_eq!(outcome.duplicates, 0, "a pull in order never ships what the receiver holds");
        cursor = next;
    }
    shipped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn interrupted_pulls_resume_without_copies_or_gaps(
        own in 1..300usize,
        theirs in 0..200usize,
        max_entries in 1..40usize,
        stop_after in 0..6usize,
    ) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = DbName::new("d").unwrap();
        let payloads: Vec<Vec<u8>> = (0..own).map(|i| format!("m{i}").into_bytes()).collect();
        let limits = PullLimits { max_entries, max_bytes: 1 << 20, max_scanned: 4 * max_entries };
        let shipped = {
            let (up, down) = (open(a.path()), open(b.path()));
            // The receiver already holds some entries of its own.
            let mine: Vec<Vec<u8>> = (0..theirs).map(|i| format!("b{i}").into_bytes()).collect();
            if !mine.is_empty() {
                down.append(&db, 0, &mine).unwrap();
            }
            up.append(&db, 0, &payloads).unwrap();
            pull(&up, &down, &db, limits, stop_after)
        };
        // Both reopened, as after a crash of either: the pull resumes from the cursor.
        let (up, down) = (open(a.path()), open(b.path()));
        let rest = pull(&up, &down, &db, limits, usize::MAX);
        prop_assert_eq!(shipped + rest, own, "each entry shipped exactly once");
        prop_assert!(down.frontier(&db, 0).unwrap().covers(&up.frontier(&db, 0).unwrap()));
        let mut want = sorted_ids(&up, &db);
        want.extend(sorted_ids(&down, &db).into_iter().filter(|(o, _)| *o == down.identity().site_id));
        want.sort();
        prop_assert_eq!(sorted_ids(&down, &db), want);
    }
}

#[test]
fn cursors_go_with_the_log() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = DbName::new("d").unwrap();
    let (up, down) = (open(a.path()), open(b.path()));
    up.append(&db, 0, &[b"x".to_vec(), b"y".to_vec()]).unwrap();
    let limits = PullLimits { max_entries: 10, max_bytes: 1 << 20, max_scanned: 10 };
    assert_eq!(pull(&up, &down, &db, limits, usize::MAX), 2);
    assert_eq!(down.pull_cursor(&db, 0, up.identity().site_id).unwrap(), 2);
    down.drop_log(&db, 0).unwrap();
    assert_eq!(down.pull_cursor(&db, 0, up.identity().site_id).unwrap(), 0, "a dropped log pulls afresh");
    assert_eq!(pull(&up, &down, &db, limits, usize::MAX), 2);
    down.remove_replica(&db, 0).unwrap();
    let late = up.read_beyond(&db, 0, 0, |_| true, limits).unwrap().0;
    let refused = down.insert_pulled(&db, 0, &late, Some((up.identity().site_id, 2)));
    assert!(matches!(refused, Err(InventoryError::NoReplica { .. })), "{refused:?}");
    assert_eq!(down.log_stats(&db, 0).unwrap().entries, 0, "a late batch does not bring a removed log back");
}
