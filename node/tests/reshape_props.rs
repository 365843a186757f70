//! Property tests of the `rebalance` and `decommission` planners on random clusters:
//! distinct sites per shard, zones never lost, balance within ±1 (or proportional to
//! capacity), the fewest moves (against brute force on small instances), determinism,
//! and plans that never remove a replica without a replacement being added first.

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::view::ClusterView;
use cairn_inventory::{DbName, PlanOrigin, SiteId, Step};
use cairn_node::planner::reshape::{Move, plans_for, reshape};
use cairn_node::planner::{self, OPERATOR_PRIORITY};
use proptest::prelude::*;

mod common;
use common::{Shape, build, shape};

/// Each shard's holding sites.
type Holders = BTreeMap<(DbName, u32), Vec<SiteId>>;

/// Replicas per site after the moves, and each shard's holders.
fn apply(view: &ClusterView, moves: &[Move]) -> (BTreeMap<SiteId, u64>, Holders) {
    let mut holders = Holders::new();
    for db in &view.dbs {
        for s in &db.placement {
            holders.insert((db.name.clone(), s.shard), s.replicas.iter().map(|r| r.site_id).collect());
        }
    }
    for m in moves {
        let h = holders.get_mut(&(m.db.clone(), m.shard)).unwrap();
        let i = h.iter().position(|s| *s == m.from).expect("a move from a holder");
        h[i] = m.to;
    }
    let mut counts: BTreeMap<SiteId, u64> = planner::candidates(view).iter().map(|c| (c.site, 0)).collect();
    for site in holders.values().flatten() {
        *counts.entry(*site).or_default() += 1;
    }
    (counts, holders)
}

fn zones(view: &ClusterView, sites: &[SiteId]) -> usize {
    sites.iter().map(|s| view.site(*s).unwrap().zone.clone()).collect::<BTreeSet<_>>().len()
}

/// The fewest moves that bring `counts` within ±1 when nothing else constrains them:
/// the least total excess over every target vector of q / q + 1 counts.
fn brute_force_moves(counts: &[u64]) -> u64 {
    let n = counts.len();
    let total: u64 = counts.iter().sum();
    let (q, r) = (total / n as u64, (total % n as u64) as u32);
    (0u32..1 << n)
        .filter(|mask| mask.count_ones() == r)
        .map(|mask| (0..n).map(|i| counts[i].saturating_sub(q + u64::from(mask >> i & 1))).sum::<u64>())
        .min()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn rebalance_keeps_shards_safe_and_reaches_balance(shape in shape(12, 64)) {
        let view = build(&shape);
        let candidates = planner::candidates(&view);
        let result = reshape(&view, &candidates, &BTreeSet::new());
        let (counts, holders) = apply(&view, &result.moves);
        for (key, sites) in &holders {
            let distinct: BTreeSet<_> = sites.iter().collect();
            prop_assert_eq!(distinct.len(), sites.len(), "{:?} twice on one site", key);
            let before = view.db(&key.0).unwrap().placement[key.1 as usize].replicas.iter().map(|r| r.site_id).collect::<Vec<_>>();
            prop_assert!(zones(&view, sites) >= zones(&view, &before), "{:?} lost a zone", key);
        }
        if result.stuck.is_empty() && !shape.capacities {
            let live: Vec<u64> = counts.values().copied().collect();
            prop_assert!(live.iter().max().unwrap() - live.iter().min().unwrap() <= 1, "{:?}", counts);
        }
        if result.stuck.is_empty() && shape.capacities {
            // Proportional to capacity: no site further than one replica from its share.
            let total: u64 = counts.values().sum();
            let cap: u64 = candidates.iter().map(|c| u64::from(c.capacity)).sum();
            for c in &candidates {
                let share = total as f64 * f64::from(c.capacity) / cap as f64;
                prop_assert!((counts[&c.site] as f64 - share).abs() < 1.0 + 1e-9, "{} vs share {share}", counts[&c.site]);
            }
        }
        // Determinism: the same view with its sites in another order gives the same moves.
        let mut shuffled = view.clone();
        shuffled.sites.reverse();
        prop_assert_eq!(&reshape(&shuffled, &planner::candidates(&shuffled), &BTreeSet::new()), &result);
    }

    #[test]
    fn rebalance_moves_no_more_than_the_optimum(n in 2..7usize, new in 1..3usize, shards in 1..40u32, r in 1..3u32) {
        // One zone, equal capacities: the only constraint is distinct sites per shard.
        let view = build(&Shape { old: n, new, zones: 1, capacities: false, dbs: vec![(shards, r)], dead: 0 });
        let result = reshape(&view, &planner::candidates(&view), &BTreeSet::new());
        prop_assume!(result.stuck.is_empty());
        let before: Vec<u64> = apply(&view, &[]).0.values().copied().collect();
        prop_assert_eq!(result.moves.len() as u64, brute_force_moves(&before));
    }

    #[test]
    fn decommission_empties_the_site_and_never_removes_first(shape in shape(10, 48), pick in 0..10usize) {
        let view = build(&shape);
        let candidates = planner::candidates(&view);
        let leaving = candidates[pick % candidates.len()].site;
        let result = reshape(&view, &candidates, &BTreeSet::from([leaving]));
        let (counts, holders) = apply(&view, &result.moves);
        if result.stuck.is_empty() {
            prop_assert_eq!(counts[&leaving], 0);
        } else {
            // Stuck only when every other candidate already holds the shard.
            prop_assert!(holders.values().filter(|h| h.contains(&leaving)).all(|h| h.len() >= candidates.len() - 1 || h.iter().any(|s| !view.is_live(*s))));
        }
        for sites in holders.values() {
            let distinct: BTreeSet<_> = sites.iter().collect();
            prop_assert_eq!(distinct.len(), sites.len());
        }
        // Every handover has its add, on the target, in the same plan; adds come first.
        let origin = PlanOrigin::Operator { via: SiteId(1) };
        let plans = plans_for(&view, &result.moves, "decommission", origin, OPERATOR_PRIORITY);
        for site_plans in plans.values() {
            let ids: BTreeSet<_> = site_plans.values().map(|p| p.plan_id).collect();
            prop_assert_eq!(ids.len(), 1, "one plan id per db");
            for plan in site_plans.values() {
                let first_handover = plan.steps.iter().position(|s| matches!(s, Step::HandoverReplica { .. }));
                if let Some(i) = first_handover {
                    prop_assert!(plan.steps[i..].iter().all(|s| matches!(s, Step::HandoverReplica { .. })), "an add after a handover");
                }
                for step in &plan.steps {
                    match step {
                        Step::HandoverReplica { shard, to } => {
                            let adds = &site_plans[to].steps;
                            let added = adds.iter().any(|s| {
                                matches!(s, Step::AddReplica { shard: k, upstreams } if k == shard && !upstreams.is_empty())
                            });
                            prop_assert!(added, "a handover of shard {} without its add", shard);
                        }
                        Step::RemoveReplica { .. } => prop_assert!(false, "a reshape never removes outright"),
                        Step::AddReplica { .. } => {}
                    }
                }
            }
        }
    }
}

#[test]
fn large_cluster_is_planned_quickly_enough_to_run_every_round() {
    // 50 sites, 512 shards × 5, five sites joining: the planner must finish (the test
    // would time out otherwise) and balance it.
    let view = build(&Shape { old: 45, new: 5, zones: 4, capacities: false, dbs: vec![(512, 5)], dead: 0 });
    let result = reshape(&view, &planner::candidates(&view), &BTreeSet::new());
    assert!(result.stuck.is_empty());
    let counts = apply(&view, &result.moves).0;
    let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
    assert!(max - min <= 1, "{min}..{max}");
    assert_eq!(result.moves.len() as u64, least_moves(&view));
}

/// The least number of moves to reach ±1 without brute force: the q + 1 targets go to
/// the sites holding the most.
fn least_moves(view: &ClusterView) -> u64 {
    let mut counts: Vec<u64> = apply(view, &[]).0.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = counts.iter().sum();
    let n = counts.len() as u64;
    let (q, r) = (total / n, total % n);
    counts.iter().enumerate().map(|(i, c)| c.saturating_sub(q + u64::from((i as u64) < r))).sum()
}
