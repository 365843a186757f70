//! Writes into replicas: group commit (`append_ready`: several publishes in one
//! transaction, each checked against its replica's state inside it), the empty log
//! a new replica starts from, and what cancelling a plan gives back.

use cairn_inventory::{
    Append, ClusterId, DbName, DbRecord, Hlc, Inventory, InventoryConfig, ReplicaState, Retention, SiteId,
};

fn db(inv: &Inventory, name: &str, shards: u32) -> DbName {
    let db = DbName::new(name).unwrap();
    inv.put_db(&DbRecord {
        seal: None,
        name: db.clone(),
        settings: cairn_inventory::DbSettings::new(shards, 1, Retention::default())
            .expect("settings in range"),
        created: Hlc::default(),
        origin: SiteId(1),
        changed: Hlc::default(),
        dropped: false,
        supersedes: None,
    })
    .unwrap();
    db
}

#[test]
fn members_on_ready_replicas_are_appended_and_the_others_get_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let d = db(&inv, "d", 4);
    inv.set_replica(&d, 0, ReplicaState::Ready).unwrap();
    inv.set_replica(&d, 1, ReplicaState::CatchingUp { upstreams: vec![SiteId(9)] }).unwrap();
    inv.set_replica(&d, 2, ReplicaState::HandingOver { to: SiteId(9) }).unwrap();
    let me = inv.identity().site_id;
    let a: &[&[u8]] = &[b"a1", b"a2"];
    let b: &[&[u8]] = &[b"b"];
    let c: &[&[u8]] = &[b"c1", b"c2", b"c3"];
    let group = [
        Append { db: &d, shard: 0, payloads: a, producer: None },
        Append { db: &d, shard: 1, payloads: b, producer: None },
        Append { db: &d, shard: 2, payloads: b, producer: None },
        Append { db: &d, shard: 3, payloads: b, producer: None },
        Append { db: &d, shard: 0, payloads: c, producer: None },
    ];
    let outcome = inv.append_ready(&group).unwrap();
    let seqs =
        |i: usize| outcome[i].as_ref().unwrap().iter().map(|s| (s.id.origin, s.id.seq)).collect::<Vec<_>>();
    // Two members on one shard: ids follow on, in group order.
    assert_eq!(seqs(0), vec![(me, 1), (me, 2)]);
    assert_eq!(seqs(4), vec![(me, 3), (me, 4), (me, 5)]);
    assert_eq!(outcome[1], Err(Some(ReplicaState::CatchingUp { upstreams: vec![SiteId(9)] })));
    assert_eq!(outcome[2], Err(Some(ReplicaState::HandingOver { to: SiteId(9) })));
    assert_eq!(outcome[3], Err(None));
    // Durable, in arrival order; nothing was written to the shards that refused.
    drop(inv);
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let payloads: Vec<Vec<u8>> =
        inv.read_log(&d, 0, 0, 100).unwrap().entries.into_iter().map(|e| e.entry.payload).collect();
    assert_eq!(payloads, [&b"a1"[..], b"a2", b"c1", b"c2", b"c3"].map(<[u8]>::to_vec));
    for shard in 1..4 {
        assert_eq!(inv.log_stats(&d, shard).unwrap().entries, 0, "shard {shard} took a write");
    }
    assert_eq!(inv.frontier(&d, 0).unwrap().get(me), 5);
}

#[test]
fn a_group_continues_the_sequence_of_single_appends() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let d = db(&inv, "d", 1);
    inv.set_replica(&d, 0, ReplicaState::Ready).unwrap();
    let first = inv.append(&d, 0, &[b"x"]).unwrap();
    let x: &[&[u8]] = &[b"y"];
    let outcome = inv.append_ready(&[Append { db: &d, shard: 0, payloads: x, producer: None }]).unwrap();
    assert_eq!(first[0].seq + 1, outcome[0].as_ref().unwrap()[0].id.seq);
    assert_eq!(inv.log_stats(&d, 0).unwrap().own_seq, 2);
}

#[test]
fn a_new_replica_starts_from_an_empty_log_whatever_was_left_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let d = db(&inv, "d", 1);
    let peer = SiteId(77);
    inv.set_replica(&d, 0, ReplicaState::Ready).unwrap();
    inv.append(&d, 0, &[b"mine"]).unwrap();
    inv.raise_frontier(&d, 0, &cairn_inventory::Frontier([(peer, 40)].into())).unwrap();
    // The replica leaves; a frontier raised afterwards (a pull that finished late) is refused.
    inv.remove_replica(&d, 0).unwrap();
    assert!(inv.raise_frontier(&d, 0, &cairn_inventory::Frontier([(peer, 50)].into())).is_err());
    // A new replica of the shard holds nothing, and claims to hold nothing.
    inv.set_replica(&d, 0, ReplicaState::CatchingUp { upstreams: vec![peer] }).unwrap();
    assert_eq!(inv.frontier(&d, 0).unwrap(), cairn_inventory::Frontier::default());
    assert_eq!(inv.log_stats(&d, 0).unwrap().entries, 0);
    // Its own seqs still move on: no id is ever reused.
    inv.set_replica(&d, 0, ReplicaState::Ready).unwrap();
    assert_eq!(inv.append(&d, 0, &[b"again"]).unwrap()[0].seq, 2);
}

#[test]
fn cancelling_a_plan_gives_its_handing_over_replicas_back_their_writes() {
    use cairn_inventory::{Plan, PlanId, PlanOrigin, Step};
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let d = db(&inv, "d", 2);
    let other = db(&inv, "other", 1);
    let to = SiteId(9);
    inv.set_replica(&d, 0, ReplicaState::Ready).unwrap();
    inv.set_replica(&d, 1, ReplicaState::Ready).unwrap();
    inv.set_replica(&other, 0, ReplicaState::HandingOver { to }).unwrap();
    let steps = vec![Step::HandoverReplica { shard: 0, to }, Step::HandoverReplica { shard: 1, to }];
    let plan = Plan {
        db: d.clone(),
        plan_id: PlanId(5),
        priority: 10,
        origin: PlanOrigin::Operator { via: to },
        steps,
    };
    inv.offer(&plan).unwrap();
    // The executor has started the first handover.
    inv.set_replica(&d, 0, ReplicaState::HandingOver { to }).unwrap();
    assert_eq!(inv.cancel_plan(&d).unwrap(), Some(PlanId(5)));
    assert_eq!(inv.replica(&d, 0).unwrap().unwrap().state, ReplicaState::Ready);
    assert_eq!(inv.replica(&d, 1).unwrap().unwrap().state, ReplicaState::Ready);
    // Another db's handover is not this plan's business.
    assert_eq!(inv.replica(&other, 0).unwrap().unwrap().state, ReplicaState::HandingOver { to });
    assert!(inv.pending_plan(&d).unwrap().is_none());
    // Nothing to cancel: nothing changes.
    inv.set_replica(&d, 1, ReplicaState::HandingOver { to }).unwrap();
    assert_eq!(inv.cancel_plan(&d).unwrap(), None);
    assert_eq!(inv.replica(&d, 1).unwrap().unwrap().state, ReplicaState::HandingOver { to });
}

#[test]
fn a_replaced_or_failed_plan_gives_back_the_writes_of_handovers_the_new_plan_does_not_make() {
    use cairn_inventory::{OfferOutcome, Plan, PlanId, PlanOrigin, Step};
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(3), InventoryConfig::default()).unwrap();
    let d = db(&inv, "d", 3);
    let to = SiteId(9);
    for shard in 0..3 {
        inv.set_replica(&d, shard, ReplicaState::Ready).unwrap();
    }
    let plan = |id: u128, priority: u32, shards: &[u32]| Plan {
        db: d.clone(),
        plan_id: PlanId(id),
        priority,
        origin: PlanOrigin::Operator { via: to },
        steps: shards.iter().map(|s| Step::HandoverReplica { shard: *s, to }).collect(),
    };
    inv.offer(&plan(1, 10, &[0, 1])).unwrap();
    inv.set_replica(&d, 0, ReplicaState::HandingOver { to }).unwrap();
    inv.set_replica(&d, 1, ReplicaState::HandingOver { to }).unwrap();
    // A higher-priority plan keeps shard 1's handover and drops shard 0's.
    let outcome = inv.offer(&plan(2, 20, &[1, 2])).unwrap();
    assert_eq!(outcome, OfferOutcome::Replaced { old: PlanId(1) });
    assert_eq!(inv.replica(&d, 0).unwrap().unwrap().state, ReplicaState::Ready);
    assert_eq!(inv.replica(&d, 1).unwrap().unwrap().state, ReplicaState::HandingOver { to });
    // An offer that is ignored changes nothing.
    inv.offer(&plan(3, 5, &[0])).unwrap();
    assert_eq!(inv.replica(&d, 1).unwrap().unwrap().state, ReplicaState::HandingOver { to });
    // Failing the plan gives shard 1 its writes back.
    assert_eq!(inv.fail_plan(&d, PlanId(2), "test").unwrap(), Some(PlanId(2)));
    assert_eq!(inv.replica(&d, 1).unwrap().unwrap().state, ReplicaState::Ready);
}
