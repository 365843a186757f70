//! The executor's steps against a real inventory and a view built from gossip values.

use std::net::SocketAddr;

use cairn_gossip::summary::{DbSummary, ReplicaPhase, ReplicaSummary, SiteSummary, SummaryKey, encode_value};
use cairn_gossip::view::{ClusterView, NodeInput, build_view};
use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Hlc, Inventory, InventoryConfig, PlanId, PlanOrigin,
    ReplicaState, Retention, Role, SiteId, Step,
};
use cairn_node::executor::{StepResult, run_head};

fn db_record(origin: SiteId) -> DbRecord {
    DbRecord {
        seal: None,
        name: DbName::new("d").unwrap(),
        settings: DbSettings::new(2, 1, Retention::default()).expect("settings in range"),
        created: Hlc { wall_ms: 1, logical: 0 },
        origin,
        changed: Hlc { wall_ms: 1, logical: 0 },
        dropped: false,
        supersedes: None,
    }
}

/// A view where `other` is live, knows db "d", and holds `replicas` (shard, frontier).
fn view(me: SiteId, other: SiteId, replicas: &[(u32, Vec<(SiteId, u64)>)]) -> ClusterView {
    let site = SiteSummary {
        drain: None,
        role: Role::Core,
        addr: cairn_gossip::summary::Label::truncated("127.0.0.1:1"),
        version: cairn_gossip::summary::Label::truncated("t"),
        started_ms: 0,
        zone: None,
        capacity: 100,
        leaving: false,
        draining: false,
        certificate_expires_ms: 0,
    };
    let mut kv = vec![
        (SummaryKey::Site.render(), encode_value(&site)),
        (
            SummaryKey::Db(DbName::new("d").unwrap()).render(),
            encode_value(&DbSummary::from(&db_record(other))),
        ),
    ];
    for (shard, frontier) in replicas {
        let r = ReplicaSummary {
            phase: ReplicaPhase::Ready,
            entries: 0,
            bytes: 0,
            frontier_digest: 0,
            frontier: cairn_inventory::Frontier(frontier.iter().copied().collect()),
            progress: None,
        };
        kv.push((SummaryKey::Replica(DbName::new("d").unwrap(), *shard).render(), encode_value(&r)));
    }
    let node = NodeInput {
        site_id: other,
        generation: 1,
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], 2)),
        live: true,
        last_seen_ms: None,
        key_values: kv,
        forged: Vec::new(),
        unverified: None,
    };
    build_view(me, &[node], &cairn_gossip::view::ViewContext::at(1_000_000))
}

fn plan(steps: Vec<Step>) -> cairn_inventory::Plan {
    cairn_inventory::Plan {
        db: DbName::new("d").unwrap(),
        plan_id: PlanId(7),
        priority: 1,
        origin: PlanOrigin::Automatic { planner: SiteId(1) },
        steps,
    }
}

fn pending(inv: &Inventory) -> Option<cairn_inventory::PendingPlan> {
    inv.pending_plan(&DbName::new("d").unwrap()).unwrap()
}

#[test]
fn add_replica_learns_the_db_from_the_view_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let me = inv.identity().site_id;
    let v = view(me, SiteId(2), &[]);
    inv.offer(&plan(vec![
        Step::AddReplica { shard: 0, upstreams: vec![] },
        Step::AddReplica { shard: 1, upstreams: vec![] },
    ]))
    .unwrap();
    let first = pending(&inv).unwrap();
    assert_eq!(run_head(&inv, &v, &first).unwrap(), StepResult::Advanced);
    // The same (now stale) snapshot again: the replica exists, the advance is a no-op.
    assert_eq!(run_head(&inv, &v, &first).unwrap(), StepResult::Advanced);
    assert_eq!(pending(&inv).unwrap().done, 1, "a repeated step must not skip the next one");
    assert_eq!(run_head(&inv, &v, &pending(&inv).unwrap()).unwrap(), StepResult::Advanced);
    assert!(pending(&inv).is_none());
    assert_eq!(inv.db(&DbName::new("d").unwrap()).unwrap().unwrap().origin, SiteId(2));
    assert_eq!(inv.replicas(None).unwrap().len(), 2);
}

#[test]
fn add_replica_from_upstreams_waits_while_catching_up() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let v = view(inv.identity().site_id, SiteId(2), &[]);
    let name = DbName::new("d").unwrap();
    inv.offer(&plan(vec![Step::AddReplica { shard: 0, upstreams: vec![SiteId(2)] }])).unwrap();
    let result = run_head(&inv, &v, &pending(&inv).unwrap()).unwrap();
    assert!(matches!(result, StepResult::Waiting(ref why) if why.contains("catching up")), "{result:?}");
    let state = inv.replica(&name, 0).unwrap().unwrap().state;
    assert_eq!(state, ReplicaState::CatchingUp { upstreams: vec![SiteId(2)] });
    // Still catching up: still waiting, nothing else changes.
    assert!(matches!(run_head(&inv, &v, &pending(&inv).unwrap()).unwrap(), StepResult::Waiting(_)));
    // Once the replicator has made it ready, the step is done.
    inv.set_replica(&name, 0, ReplicaState::Ready).unwrap();
    assert_eq!(run_head(&inv, &v, &pending(&inv).unwrap()).unwrap(), StepResult::Advanced);
    assert!(pending(&inv).is_none());
}

#[test]
fn handover_waits_until_the_target_covers_our_frontier() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let me = inv.identity().site_id;
    let target = SiteId(2);
    let name = DbName::new("d").unwrap();
    inv.put_db(&db_record(me)).unwrap();
    inv.set_replica(&name, 0, ReplicaState::Ready).unwrap();
    inv.append(&name, 0, &["a", "b", "c"]).unwrap();
    inv.offer(&plan(vec![Step::HandoverReplica { shard: 0, to: target }])).unwrap();

    // The target holds the shard but only our first two entries: wait, and stop taking writes.
    let behind = view(me, target, &[(0, vec![(me, 2)])]);
    assert!(matches!(run_head(&inv, &behind, &pending(&inv).unwrap()).unwrap(), StepResult::Waiting(_)));
    assert_eq!(inv.replica(&name, 0).unwrap().unwrap().state, ReplicaState::HandingOver { to: target });
    // No replica of the shard on the target at all: still waiting.
    let absent = view(me, target, &[]);
    assert!(matches!(run_head(&inv, &absent, &pending(&inv).unwrap()).unwrap(), StepResult::Waiting(_)));
    assert!(inv.replica(&name, 0).unwrap().is_some(), "never removed before a covering replacement exists");
    // Covered: the local replica goes and the plan completes.
    let covering = view(me, target, &[(0, vec![(me, 3)])]);
    assert_eq!(run_head(&inv, &covering, &pending(&inv).unwrap()).unwrap(), StepResult::Advanced);
    assert!(inv.replica(&name, 0).unwrap().is_none());
    assert!(pending(&inv).is_none());
}

#[test]
fn handover_keeps_taking_writes_until_the_target_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let me = inv.identity().site_id;
    let name = DbName::new("d").unwrap();
    inv.put_db(&db_record(me)).unwrap();
    inv.set_replica(&name, 0, ReplicaState::Ready).unwrap();
    inv.offer(&plan(vec![Step::HandoverReplica { shard: 0, to: SiteId(2) }])).unwrap();
    let absent = view(me, SiteId(2), &[]);
    let result = run_head(&inv, &absent, &pending(&inv).unwrap()).unwrap();
    assert!(
        matches!(result, StepResult::Waiting(ref why) if why.contains("before handing over")),
        "{result:?}"
    );
    assert_eq!(inv.replica(&name, 0).unwrap().unwrap().state, ReplicaState::Ready);
}

#[test]
fn a_failing_step_backs_off_and_does_not_hold_up_other_dbs() {
    use cairn_node::executor::{StepNotes, run_round};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let me = inv.identity().site_id;
    let v = view(me, SiteId(2), &[]);
    // "a" sorts before "d": its plan runs first in each round, and its step fails (db
    // "a" has 2 shards; there is no shard 5).
    let mut a = db_record(me);
    a.name = DbName::new("a").unwrap();
    inv.put_db(&a).unwrap();
    let mut bad = plan(vec![Step::AddReplica { shard: 5, upstreams: vec![] }]);
    bad.db = a.name.clone();
    bad.plan_id = PlanId(8);
    inv.offer(&bad).unwrap();
    inv.offer(&plan(vec![Step::AddReplica { shard: 0, upstreams: vec![] }])).unwrap();

    let notes = StepNotes::default();
    let notify = tokio::sync::Notify::new();
    let every = Duration::from_millis(200);
    run_round(&inv, &v, &notes, every, &notify).unwrap();
    assert!(pending(&inv).is_none(), "db d's plan ran although db a's failed");
    assert_eq!(inv.replicas(Some(&DbName::new("d").unwrap())).unwrap().len(), 1);
    let status = notes.status(&a.name, PlanId(8));
    assert!(status.starts_with("error (failed 1 times") && status.contains("shard 5"), "{status}");
    // Backing off: the next round does not try it again.
    run_round(&inv, &v, &notes, every, &notify).unwrap();
    assert!(notes.status(&a.name, PlanId(8)).contains("failed 1 times"));
    std::thread::sleep(every + Duration::from_millis(50));
    run_round(&inv, &v, &notes, every, &notify).unwrap();
    assert!(notes.status(&a.name, PlanId(8)).contains("failed 2 times"));
    // The plan stays pending for an operator to cancel or replace.
    assert!(inv.pending_plan(&a.name).unwrap().is_some());
}

#[test]
fn an_allocation_step_for_a_shard_held_elsewhere_fails_instead_of_making_an_empty_ready_replica() {
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let me = inv.identity().site_id;
    // Site 2 holds shard 0 ready (with data): a stale allocation step arrives here.
    let v = view(me, SiteId(2), &[(0, vec![(SiteId(2), 40)])]);
    inv.offer(&plan(vec![Step::AddReplica { shard: 0, upstreams: vec![] }])).unwrap();
    let result = run_head(&inv, &v, &pending(&inv).unwrap()).unwrap();
    let StepResult::Failed(why) = result else { panic!("{result:?}") };
    assert!(why.contains("held by") && why.contains("plan again"), "{why}");
    assert_eq!(inv.replica(&DbName::new("d").unwrap(), 0).unwrap(), None, "no empty replica made");
    assert_eq!(pending(&inv), None, "the plan is over");
    // Shard 1, held nowhere, is allocated as before.
    inv.offer(&cairn_inventory::Plan {
        plan_id: PlanId(8),
        ..plan(vec![Step::AddReplica { shard: 1, upstreams: vec![] }])
    })
    .unwrap();
    assert_eq!(run_head(&inv, &v, &pending(&inv).unwrap()).unwrap(), StepResult::Advanced);
    let replica = inv.replica(&DbName::new("d").unwrap(), 1).unwrap().unwrap();
    assert_eq!(replica.state, ReplicaState::Ready);
}

#[test]
fn a_handover_whose_target_never_took_its_part_fails_after_a_while_and_the_replica_stays() {
    use cairn_node::executor::{Action, Local, ORPHANED_AFTER_MS, Verdict, decide};
    let (me, target) = (SiteId(1), SiteId(2));
    let name = DbName::new("d").unwrap();
    let step = Step::HandoverReplica { shard: 0, to: target };
    let local = |state: ReplicaState, pending_ms: u64| Local {
        me,
        db_known: true,
        replica: Some(state),
        frontier: cairn_inventory::Frontier([(me, 3)].into()),
        pending_ms,
    };
    // The target is live but holds nothing and runs no plan for the db.
    let absent = view(me, target, &[]);
    let soon = decide(&name, &step, &local(ReplicaState::Ready, 1_000), &absent);
    assert!(matches!(soon.verdict, Verdict::Wait(_)) && soon.actions.is_empty(), "{soon:?}");
    let late = decide(&name, &step, &local(ReplicaState::Ready, ORPHANED_AFTER_MS), &absent);
    assert!(
        matches!(late.verdict, Verdict::Fail(ref why) if why.contains("has not taken its part")),
        "{late:?}"
    );
    assert!(late.actions.is_empty(), "the replica stays as it is: {late:?}");
    // Handing over already (the target was ready, then lost its copy): back to taking writes.
    let handing = ReplicaState::HandingOver { to: target };
    let late = decide(&name, &step, &local(handing.clone(), ORPHANED_AFTER_MS), &absent);
    assert_eq!(late.actions, vec![Action::SetReplica(ReplicaState::Ready)]);
    assert!(matches!(late.verdict, Verdict::Fail(_)));
    // A target that holds the shard, however far behind, is waited for.
    let behind = view(me, target, &[(0, vec![(me, 1)])]);
    let patient = decide(&name, &step, &local(handing, 10 * ORPHANED_AFTER_MS), &behind);
    assert!(matches!(patient.verdict, Verdict::Wait(_)), "{patient:?}");
}
