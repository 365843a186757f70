//! Importing placement: a site rebuilt under its old id, all-or-nothing writes, and
//! importing twice changing nothing.

use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Hlc, ImportedDb, Inventory, InventoryConfig, InventoryError,
    ReplicaState, Retention, SiteId,
};

fn record(name: &str, created_ms: u64) -> DbRecord {
    let created = Hlc { wall_ms: created_ms, logical: 0 };
    DbRecord::new(
        DbName::new(name).unwrap(),
        DbSettings::new(4, 2, Retention::default()).unwrap(),
        created,
        SiteId(9),
    )
}

fn imported(name: &str, created_ms: u64, shards: &[u32]) -> ImportedDb {
    ImportedDb {
        record: record(name, created_ms),
        replicas: shards.iter().map(|s| (*s, vec![SiteId(7)])).collect(),
    }
}

#[test]
fn a_lost_inventory_comes_back_under_its_old_site_id_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open_as(dir.path(), ClusterId(3), SiteId(42), InventoryConfig::default()).unwrap();
    assert_eq!(inv.identity().site_id, SiteId(42));
    drop(inv);
    let again = Inventory::open_as(dir.path(), ClusterId(3), SiteId(42), InventoryConfig::default()).unwrap();
    drop(again);
    let err =
        Inventory::open_as(dir.path(), ClusterId(3), SiteId(43), InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::WrongSite { .. }), "{err}");
    let err =
        Inventory::open_as(dir.path(), ClusterId(4), SiteId(42), InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::WrongCluster { .. }), "{err}");
}

#[test]
fn an_import_writes_catching_up_replicas_once_and_twice_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open_as(dir.path(), ClusterId(3), SiteId(42), InventoryConfig::default()).unwrap();
    let dbs = [imported("a", 100, &[0, 2]), imported("b", 200, &[3])];
    let first = inv.import(&dbs).unwrap();
    assert_eq!((first.dbs_written, first.replicas_written, first.replicas_present), (2, 3, 0));
    let replica = inv.replica(&DbName::new("a").unwrap(), 2).unwrap().unwrap();
    assert_eq!(replica.state, ReplicaState::CatchingUp { upstreams: vec![SiteId(7)] });
    let second = inv.import(&dbs).unwrap();
    assert_eq!((second.dbs_written, second.replicas_written, second.replicas_present), (0, 0, 3));
    assert_eq!(inv.replicas(None).unwrap().len(), 3);
}

#[test]
fn a_contradicting_import_names_the_entry_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open_as(dir.path(), ClusterId(3), SiteId(42), InventoryConfig::default()).unwrap();
    inv.import(&[imported("a", 100, &[0])]).unwrap();
    let before = (inv.db_records().unwrap(), inv.replicas(None).unwrap());

    // Another creation of "a" (a later one), listed after a db that would be new.
    let err = inv.import(&[imported("fresh", 300, &[1]), imported("a", 500, &[1])]).unwrap_err();
    assert!(err.to_string().contains("db a") && err.to_string().contains("another creation"), "{err}");
    // A shard out of range; a replica with nothing to copy from; this site as upstream.
    let err = inv.import(&[imported("fresh", 300, &[4])]).unwrap_err();
    assert!(err.to_string().contains("db fresh shard 4"), "{err}");
    let mut orphan = imported("fresh", 300, &[1]);
    orphan.replicas[0].1.clear();
    assert!(inv.import(&[orphan]).unwrap_err().to_string().contains("other site to copy from"));
    let mut own = imported("fresh", 300, &[1]);
    own.replicas[0].1 = vec![SiteId(42)];
    assert!(inv.import(&[own]).is_err());
    // A dropped db.
    let mut dropped = imported("fresh", 300, &[1]);
    dropped.record.dropped = true;
    assert!(inv.import(&[dropped]).unwrap_err().to_string().contains("dropped"));

    assert_eq!((inv.db_records().unwrap(), inv.replicas(None).unwrap()), before, "a refused import wrote");
}

#[test]
fn an_import_keeps_the_newer_version_of_the_same_creation() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open_as(dir.path(), ClusterId(3), SiteId(42), InventoryConfig::default()).unwrap();
    let mut newer = imported("a", 100, &[0]);
    newer.record.settings.replication = cairn_inventory::Replication::new(3).unwrap();
    newer.record.changed = Hlc { wall_ms: 900, logical: 0 };
    inv.import(&[newer]).unwrap();
    let older = imported("a", 100, &[0, 1]);
    let outcome = inv.import(&[older]).unwrap();
    assert_eq!((outcome.dbs_written, outcome.replicas_written), (0, 1));
    assert_eq!(inv.db(&DbName::new("a").unwrap()).unwrap().unwrap().replication(), 3);
}
