//! Truncated and bit-flipped records on disk are reported, naming the record, and never
//! panicked on; scans skip them with a warning; other records keep working.

use std::path::Path;

use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Hlc, Inventory, InventoryConfig, InventoryError, Plan, PlanId,
    PlanOrigin, Retention, SiteId, Step,
};
use heed::types::Bytes;

const CLUSTER: ClusterId = ClusterId(0xbad);

fn open(dir: &Path) -> Inventory {
    Inventory::open(dir, CLUSTER, InventoryConfig::default()).unwrap()
}

fn db(name: &str) -> DbRecord {
    DbRecord {
        seal: None,
        name: DbName::new(name).unwrap(),
        settings: DbSettings::new(2, 1, Retention::default()).expect("settings in range"),
        created: Hlc::default(),
        origin: SiteId(1),
        changed: Hlc::default(),
        dropped: false,
        supersedes: None,
    }
}

/// Rewrites the value stored under `key` in `table` with `damage` applied, by opening the
/// LMDB file directly (the inventory must be closed).
fn damage(dir: &Path, table: &str, key_matches: impl Fn(&[u8]) -> bool, damage: impl Fn(&mut Vec<u8>)) {
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(16).open(dir).unwrap() };
    let rtxn = env.read_txn().unwrap();
    let t: heed::Database<Bytes, Bytes> = env
        .open_databases_and_commit(rtxn, |o, r| {
            o.open_database(r, Some(table)).map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let (key, mut value) = t
        .iter(&wtxn)
        .unwrap()
        .map(Result::unwrap)
        .find(|(k, _)| key_matches(k))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .expect("record to damage");
    damage(&mut value);
    t.put(&mut wtxn, &key, &value).unwrap();
    wtxn.commit().unwrap();
}

fn flip(bit: usize) -> impl Fn(&mut Vec<u8>) {
    move |v: &mut Vec<u8>| {
        let at = bit / 8 % v.len();
        v[at] ^= 1 << (bit % 8);
    }
}

#[test]
fn a_flipped_db_record_is_named_and_skipped_by_listing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let inv = open(dir.path());
        inv.put_db(&db("good")).unwrap();
        inv.put_db(&db("hurt")).unwrap();
    }
    damage(dir.path(), "dbs", |k| k.ends_with(b"hurt"), flip(60));
    let inv = open(dir.path());
    let err = inv.db(&DbName::new("hurt").unwrap()).unwrap_err();
    assert!(matches!(err, InventoryError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("dbs[hurt]"), "{err}");
    let names: Vec<_> = inv.dbs().unwrap().into_iter().map(|d| d.name.to_string()).collect();
    assert_eq!(names, ["good"]);
    let report = inv.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].record, "dbs[hurt]");
    // Rewriting the record heals it.
    inv.put_db(&db("hurt")).unwrap();
    assert!(inv.verify().unwrap().corrupt.is_empty());
}

#[test]
fn a_truncated_log_entry_is_named_and_readers_can_step_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let name = DbName::new("logs").unwrap();
    {
        let inv = open(dir.path());
        inv.append(&name, 1, &["zero", "one", "two", "three"]).unwrap();
    }
    damage(dir.path(), "log_entries", |k| k.ends_with(&2u64.to_be_bytes()), |v| v.truncate(v.len() / 2));
    let inv = open(dir.path());
    let err = inv.read_log(&name, 1, 0, 10).unwrap_err();
    assert!(err.to_string().contains("log_entries[logs/1 #2]"), "{err}");
    assert_eq!(inv.read_log(&name, 1, 0, 2).unwrap().entries.len(), 2);
    let rest = inv.read_log(&name, 1, 3, 10).unwrap();
    assert_eq!(rest.entries[0].entry.payload, b"three");
    assert_eq!(inv.verify().unwrap().corrupt[0].record, "log_entries[logs/1 #2]");
    // Appends still work.
    inv.append(&name, 1, &["four"]).unwrap();
}

#[test]
fn a_damaged_pending_plan_fails_that_db_only() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |db: &str| Plan {
        db: DbName::new(db).unwrap(),
        plan_id: PlanId(9),
        priority: 1,
        origin: PlanOrigin::Operator { via: SiteId(2) },
        steps: vec![
            Step::RemoveReplica { shard: 0 },
            Step::AddReplica { shard: 1, upstreams: vec![SiteId(3)] },
        ],
    };
    {
        let inv = open(dir.path());
        inv.offer(&plan("a")).unwrap();
        inv.offer(&plan("b")).unwrap();
    }
    // Every single-bit flip anywhere in the record is caught; try a spread of them.
    for bit in [0, 3, 8, 17, 40, 77, 130] {
        damage(dir.path(), "plans", |k| k.ends_with(b"a"), flip(bit));
        let inv = open(dir.path());
        let err = inv.pending_plan(&DbName::new("a").unwrap()).unwrap_err();
        assert!(err.to_string().contains("plans[a]"), "bit {bit}: {err}");
        assert!(inv.offer(&plan("a")).is_err(), "an offer over a corrupt plan must not guess");
        assert_eq!(inv.pending_plans().unwrap().len(), 1, "listing skips the corrupt plan");
        assert_eq!(inv.pending_plan(&DbName::new("b").unwrap()).unwrap().unwrap().done, 0);
        drop(inv);
        damage(dir.path(), "plans", |k| k.ends_with(b"a"), flip(bit)); // undo
        assert!(open(dir.path()).verify().unwrap().corrupt.is_empty());
    }
}

#[test]
fn a_damaged_identity_stops_the_open_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    damage(dir.path(), "meta", |k| k == b"identity", flip(45));
    let err = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap_err();
    assert!(err.to_string().contains("meta[identity]"), "{err}");
    damage(dir.path(), "meta", |k| k == b"identity", |v| v.truncate(3));
    let err = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}
