//! The plan state machine against a simple in-memory model: random sequences of offer,
//! advance, cancel, fail and reopen, with the real LMDB store underneath.

use std::collections::{BTreeMap, VecDeque};

use cairn_inventory::{
    AdvanceOutcome, ClusterId, DbName, Inventory, InventoryConfig, OfferOutcome, Plan, PlanEnd, PlanId,
    PlanOrigin, SiteId, Step,
};
use proptest::prelude::*;

const HISTORY: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Offer {
        db: usize,
        plan: usize,
    },
    /// Advance the named plan at `done + skew` (skew 0 is the right step).
    Advance {
        db: usize,
        plan: Option<usize>,
        skew: i8,
    },
    Cancel {
        db: usize,
    },
    Fail {
        db: usize,
        plan: Option<usize>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..6usize).prop_map(|(db, plan)| Op::Offer { db, plan }),
        6 => (0..2usize, prop::option::weighted(0.2, 0..6usize), prop_oneof![6 => Just(0i8), 1 => Just(-1), 1 => Just(1)])
            .prop_map(|(db, plan, skew)| Op::Advance { db, plan, skew }),
        1 => (0..2usize).prop_map(|db| Op::Cancel { db }),
        1 => (0..2usize, prop::option::weighted(0.5, 0..6usize)).prop_map(|(db, plan)| Op::Fail { db, plan }),
        1 => Just(Op::Reopen),
    ]
}

/// Six plans per db: ids are fixed per (db, index), so offering "the same plan" twice
/// really is the same plan, as with a deterministic planner.
fn plans() -> impl Strategy<Value = Vec<(u32, usize)>> {
    prop::collection::vec((0..4u32, 1..5usize), 6)
}

fn make_plan(db: usize, index: usize, priority: u32, steps: usize) -> Plan {
    Plan {
        db: DbName::new(format!("db{db}")).unwrap(),
        plan_id: PlanId((db * 100 + index) as u128 + 1),
        priority,
        origin: PlanOrigin::Automatic { planner: SiteId(1) },
        steps: (0..steps).map(|s| Step::RemoveReplica { shard: s as u32 }).collect(),
    }
}

/// What the model keeps per db.
#[derive(Debug, Default)]
struct ModelDb {
    /// (plan, steps done).
    pending: Option<(Plan, u32)>,
    history: VecDeque<(PlanId, PlanEnd)>,
}

impl ModelDb {
    fn end(&mut self, end: PlanEnd) -> Option<PlanId> {
        let (plan, _) = self.pending.take()?;
        self.history.push_back((plan.plan_id, end));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        Some(plan.plan_id)
    }
}

fn open(dir: &std::path::Path) -> Inventory {
    let config = InventoryConfig { plan_history_limit: HISTORY, ..Default::default() };
    Inventory::open(dir, ClusterId(1), config).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(catalogue in plans(), ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(dir.path());
        let mut model: BTreeMap<usize, ModelDb> = BTreeMap::new();
        let plan_of = |db: usize, i: usize| make_plan(db, i, catalogue[i].0, catalogue[i].1);
        for op in ops {
            match op {
                Op::Offer { db, plan } => {
                    let plan = plan_of(db, plan);
                    let m = model.entry(db).or_default();
                    let expected = if let Some((_, end)) = m.history.iter().rev().find(|(id, _)| *id == plan.plan_id) {
                        OfferOutcome::AlreadyEnded { end: end.clone() }
                    } else {
                        match &m.pending {
                            None => { m.pending = Some((plan.clone(), 0)); OfferOutcome::Accepted }
                            Some((cur, _)) if cur.plan_id == plan.plan_id => OfferOutcome::AlreadyPending,
                            Some((cur, _)) if cur.priority >= plan.priority => OfferOutcome::Ignored {
                                current: cur.plan_id, current_priority: cur.priority,
                            },
                            Some((cur, _)) => {
                                let old = cur.plan_id;
                                m.end(PlanEnd::Replaced { by: plan.plan_id });
                                m.pending = Some((plan.clone(), 0));
                                OfferOutcome::Replaced { old }
                            }
                        }
                    };
                    prop_assert_eq!(inv.offer(&plan).unwrap(), expected);
                }
                Op::Advance { db, plan, skew } => {
                    let m = model.entry(db).or_default();
                    let (plan_id, step) = match (&m.pending, plan) {
                        (_, Some(i)) => (plan_of(db, i).plan_id, m.pending.as_ref().map_or(0, |p| p.1)),
                        (Some((p, done)), None) => (p.plan_id, *done),
                        (None, None) => (plan_of(db, 0).plan_id, 0),
                    };
                    let step = (i64::from(step) + i64::from(skew)).max(0) as u32;
                    let expected = match &mut m.pending {
                        Some((p, done)) if p.plan_id == plan_id && *done == step => {
                            *done += 1;
                            if *done as usize == p.steps.len() {
                                m.end(PlanEnd::Completed);
                                AdvanceOutcome::Completed
                            } else {
                                AdvanceOutcome::Advanced { next: *done }
                            }
                        }
                        _ => AdvanceOutcome::Stale,
                    };
                    let name = DbName::new(format!("db{db}")).unwrap();
                    prop_assert_eq!(inv.advance(&name, plan_id, step).unwrap(), expected);
                }
                Op::Cancel { db } => {
                    let expected = model.entry(db).or_default().end(PlanEnd::Cancelled);
                    let name = DbName::new(format!("db{db}")).unwrap();
                    prop_assert_eq!(inv.cancel_plan(&name).unwrap(), expected);
                }
                Op::Fail { db, plan } => {
                    let m = model.entry(db).or_default();
                    let target = plan.map(|i| plan_of(db, i).plan_id).or(m.pending.as_ref().map(|p| p.0.plan_id));
                    let Some(target) = target else { continue };
                    let expected = match &m.pending {
                        Some((p, _)) if p.plan_id == target => m.end(PlanEnd::Failed { reason: "boom".into() }),
                        _ => None,
                    };
                    let name = DbName::new(format!("db{db}")).unwrap();
                    prop_assert_eq!(inv.fail_plan(&name, target, "boom").unwrap(), expected);
                }
                Op::Reopen => {
                    drop(inv);
                    inv = open(dir.path());
                }
            }
            // After every operation the stored state equals the model's.
            for (db, m) in &model {
                let name = DbName::new(format!("db{db}")).unwrap();
                let pending = inv.pending_plan(&name).unwrap();
                match (&m.pending, pending) {
                    (None, None) => {}
                    (Some((plan, done)), Some(stored)) => {
                        prop_assert_eq!(stored.plan_id, plan.plan_id);
                        prop_assert_eq!(stored.done, *done);
                        prop_assert_eq!(&stored.remaining[..], &plan.steps[*done as usize..]);
                        prop_assert_eq!(stored.head(), plan.steps.get(*done as usize));
                    }
                    (want, got) => prop_assert!(false, "db{}: model {:?}, store {:?}", db, want, got),
                }
                let history: Vec<_> = inv.plan_history(&name).unwrap().into_iter().map(|h| (h.plan_id, h.end)).collect();
                prop_assert_eq!(history, m.history.iter().cloned().collect::<Vec<_>>());
            }
        }
        prop_assert!(inv.verify().unwrap().corrupt.is_empty());
    }
}

#[test]
fn empty_and_oversized_plans_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let mut plan = make_plan(0, 0, 1, 0);
    assert!(inv.offer(&plan).unwrap_err().to_string().contains("no steps"));
    plan.steps = vec![Step::RemoveReplica { shard: 0 }; cairn_inventory::plan_machine::MAX_PLAN_STEPS + 1];
    assert!(inv.offer(&plan).unwrap_err().to_string().contains("at most"));
    assert!(inv.pending_plans().unwrap().is_empty());
}
