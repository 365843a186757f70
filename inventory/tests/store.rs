//! Opening data dirs, identity, locking, map growth, dbs and replicas.

use cairn_inventory::{
    ClusterId, DbName, DbRecord, Hlc, Inventory, InventoryConfig, InventoryError, ReplicaState, Retention,
    SiteId,
};

const CLUSTER: ClusterId = ClusterId(0xc1);

fn db(name: &str, shards: u32) -> DbRecord {
    DbRecord {
        seal: None,
        name: DbName::new(name).unwrap(),
        settings: cairn_inventory::DbSettings::new(shards, 2, Retention::default())
            .expect("settings in range"),
        created: Hlc { wall_ms: 1, logical: 0 },
        origin: SiteId(1),
        changed: Hlc { wall_ms: 1, logical: 0 },
        dropped: false,
        supersedes: None,
    }
}

#[test]
fn site_id_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap().identity();
    let again = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap().identity();
    assert_eq!(first, again);
    assert_eq!(first.cluster_id, CLUSTER);
    let other_dir = tempfile::tempdir().unwrap();
    let other = Inventory::open(other_dir.path(), CLUSTER, InventoryConfig::default()).unwrap().identity();
    assert_ne!(first.site_id, other.site_id);
}

#[test]
fn another_clusters_data_dir_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap());
    let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let err = Inventory::open(dir.path(), ClusterId(0xdead), InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::WrongCluster { found: CLUSTER, .. }), "{err}");
    assert!(err.to_string().contains("belongs to cluster"), "{err}");
    assert_eq!(before, std::fs::read(dir.path().join("data.mdb")).unwrap());
    // It still opens for its own cluster.
    Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
}

#[test]
fn a_newer_store_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap());
    // Write format 99 where a newer cairn would, with a valid envelope.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(16).open(dir.path()).unwrap() };
    let wtxn = env.write_txn().unwrap();
    let meta: heed::Database<heed::types::Bytes, heed::types::Bytes> = env
        .create_databases_and_commit(wtxn, |o, w| {
            o.create_database(w, Some("meta")).map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    meta.put(&mut wtxn, b"format", &cairn_inventory::codec::encode_checked(&99u32).unwrap()).unwrap();
    wtxn.commit().unwrap();
    drop(env);
    let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let err = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::NewerFormat { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade cairn"));
    assert_eq!(before, std::fs::read(dir.path().join("data.mdb")).unwrap());
}

#[test]
fn a_second_open_of_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    let err = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another cairn process"));
    drop(first);
    Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
}

#[test]
fn the_lock_holds_against_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    // flock(1) from util-linux: a real second process trying the same lock file.
    let status = std::process::Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(dir.path().join(cairn_inventory::LOCK_FILE))
        .arg("true")
        .status()
        .expect("flock(1) from util-linux is needed for this test");
    assert!(!status.success(), "another process got the lock while the inventory was open");
    drop(inv);
}

#[test]
fn open_existing_never_creates() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = Inventory::open_existing(&missing, InventoryConfig::default()).unwrap_err();
    assert!(matches!(err, InventoryError::NotAnInventory { .. }), "{err}");
    assert!(!missing.exists());
}

#[test]
fn the_map_grows_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let config = InventoryConfig { map_size: 1 << 20, map_growth: 1 << 20, ..Default::default() };
    let inv = Inventory::open(dir.path(), CLUSTER, config).unwrap();
    inv.put_db(&db("big", 1)).unwrap();
    let name = DbName::new("big").unwrap();
    let payload = vec![7u8; 4096];
    for _ in 0..200 {
        inv.append(&name, 0, &[&payload[..]; 10]).unwrap();
    }
    assert!(inv.map_size() > 4 << 20, "map stayed at {}", inv.map_size());
    assert_eq!(inv.log_stats(&name, 0).unwrap().entries, 2000);
}

#[test]
fn a_full_map_with_growth_disabled_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = InventoryConfig { map_size: 1 << 20, map_growth: 0, ..Default::default() };
    let inv = Inventory::open(dir.path(), CLUSTER, config).unwrap();
    inv.put_db(&db("big", 1)).unwrap();
    let name = DbName::new("big").unwrap();
    let payload = vec![7u8; 4096];
    let mut stored = 0;
    let err = loop {
        match inv.append(&name, 0, &[&payload[..]; 4]) {
            Ok(_) => stored += 4,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, InventoryError::MapFull { .. }), "{err}");
    assert!(stored > 0);
    assert_eq!(inv.log_stats(&name, 0).unwrap().entries, stored);
    assert_eq!(inv.read_log(&name, 0, 0, usize::MAX).unwrap().entries.len() as u64, stored);
    // Small writes that fit still go through, and the store is intact after reopening.
    drop(inv);
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    inv.append(&name, 0, &[b"after"]).unwrap();
    assert_eq!(inv.log_stats(&name, 0).unwrap().entries, stored + 1);
    assert!(inv.verify().unwrap().corrupt.is_empty());
}

#[test]
fn bad_settings_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let config = InventoryConfig { map_size: 1000, ..Default::default() };
    let err = Inventory::open(dir.path(), CLUSTER, config).unwrap_err();
    assert!(err.to_string().contains("map_size"), "{err}");
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    drop(inv);
    // Settings out of range cannot even be made.
    let err = cairn_inventory::DbSettings::new(0, 2, Retention::default()).unwrap_err();
    assert!(err.to_string().contains("shards"), "{err}");
    let err = cairn_inventory::DbSettings::new(1, 99, Retention::default()).unwrap_err();
    assert!(err.to_string().contains("replication"), "{err}");
}

#[test]
fn dbs_and_replicas_are_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let name = DbName::new("messages").unwrap();
    let up = SiteId(5);
    {
        let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
        inv.put_db(&db("messages", 4)).unwrap();
        inv.put_db(&db("other", 2)).unwrap();
        inv.set_replica(&name, 1, ReplicaState::CatchingUp { upstreams: vec![up] }).unwrap();
        let created = inv.replica(&name, 1).unwrap().unwrap().created_ms;
        let ready = inv.set_replica(&name, 1, ReplicaState::Ready).unwrap();
        assert_eq!(ready.created_ms, created);
        inv.set_replica(&name, 3, ReplicaState::HandingOver { to: up }).unwrap();
        let err = inv.set_replica(&name, 4, ReplicaState::Ready).unwrap_err();
        assert!(matches!(err, InventoryError::ShardOutOfRange { shard: 4, shards: 4, .. }), "{err}");
        let err = inv.set_replica(&DbName::new("nope").unwrap(), 0, ReplicaState::Ready).unwrap_err();
        assert!(matches!(err, InventoryError::UnknownDb(_)), "{err}");
    }
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    let names: Vec<_> = inv.dbs().unwrap().into_iter().map(|d| d.name.to_string()).collect();
    assert_eq!(names, ["other", "messages"]); // ordered by key: name length first
    let replicas = inv.replicas(Some(&name)).unwrap();
    assert_eq!(replicas.len(), 2);
    assert_eq!(replicas[0].state, ReplicaState::Ready);
    assert_eq!(replicas[1].state, ReplicaState::HandingOver { to: up });
    assert!(inv.remove_replica(&name, 1).unwrap());
    assert!(!inv.remove_replica(&name, 1).unwrap(), "removing twice is the same as once");
    assert!(inv.remove_db(&name).unwrap());
    assert!(inv.replicas(None).unwrap().is_empty());
    assert!(inv.db(&name).unwrap().is_none());
}

#[test]
fn a_dropped_db_leaves_a_tombstone_and_nothing_else_and_can_be_created_again() {
    use cairn_inventory::{PlanEnd, PlanId, PlanOrigin, Step};
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    let orders = db("orders", 4);
    let other = db("orders2", 4);
    inv.put_db(&orders).unwrap();
    inv.put_db(&other).unwrap();
    for shard in 0..2 {
        inv.set_replica(&orders.name, shard, ReplicaState::Ready).unwrap();
        inv.append(&orders.name, shard, &[b"kept?".as_slice()]).unwrap();
    }
    inv.set_replica(&other.name, 0, ReplicaState::Ready).unwrap();
    inv.append(&other.name, 0, &[b"stays".as_slice()]).unwrap();
    let plan = cairn_inventory::Plan {
        db: orders.name.clone(),
        plan_id: PlanId(7),
        priority: 1,
        origin: PlanOrigin::Automatic { planner: SiteId(1) },
        steps: vec![Step::RemoveReplica { shard: 3 }],
    };
    inv.offer(&plan).unwrap();

    let mut tombstone = orders.clone();
    assert!(inv.drop_db(&tombstone).is_err(), "a record that does not say dropped is no tombstone");
    tombstone.dropped = true;
    tombstone.changed = Hlc { wall_ms: 5, logical: 0 };
    assert_eq!(inv.drop_db(&tombstone).unwrap(), 2);

    assert_eq!(inv.db(&orders.name).unwrap(), None);
    assert_eq!(inv.db_record(&orders.name).unwrap(), Some(tombstone.clone()));
    assert_eq!(inv.dbs().unwrap(), vec![other.clone()]);
    assert_eq!(inv.db_records().unwrap().len(), 2);
    assert!(inv.replicas(Some(&orders.name)).unwrap().is_empty());
    assert_eq!(inv.log_stats(&orders.name, 0).unwrap().entries, 0);
    assert_eq!(inv.pending_plan(&orders.name).unwrap(), None);
    assert_eq!(inv.plan_history(&orders.name).unwrap().last().unwrap().end, PlanEnd::Cancelled);
    let err = inv.set_replica(&orders.name, 0, ReplicaState::Ready).unwrap_err();
    assert!(matches!(err, InventoryError::UnknownDb(_)), "{err}");
    // The other db (whose name starts with the dropped one's) is untouched.
    assert_eq!(inv.log_stats(&other.name, 0).unwrap().entries, 1);
    assert_eq!(inv.replicas(Some(&other.name)).unwrap().len(), 1);

    // Dropping twice is the same as once; kept across reopen.
    assert_eq!(inv.drop_db(&tombstone).unwrap(), 0);
    drop(inv);
    let inv = Inventory::open(dir.path(), CLUSTER, InventoryConfig::default()).unwrap();
    assert_eq!(inv.db_record(&orders.name).unwrap(), Some(tombstone));

    // Created again (a later creation): a new, empty db.
    let mut again = db("orders", 2);
    again.created = Hlc { wall_ms: 6, logical: 0 };
    again.changed = again.created;
    inv.put_db(&again).unwrap();
    assert_eq!(inv.db(&orders.name).unwrap(), Some(again));
    inv.set_replica(&orders.name, 0, ReplicaState::Ready).unwrap();
    assert_eq!(inv.log_stats(&orders.name, 0).unwrap().entries, 0);
}
