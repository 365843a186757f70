//! Property tests of the `recover` and `trim` planners on random clusters with random
//! dead, lost and returning sites: replication restored wherever enough sites are live,
//! on distinct sites, catching up from live ready copies; shards with no copy left
//! reported lost, never planned; trim never below the factor, keeping zones; and the
//! same view always gives the same plans.

use std::collections::BTreeSet;

use cairn_gossip::SiteState;
use cairn_gossip::view::{ClusterView, ReplicaView};
use cairn_inventory::{DbName, PlanOrigin, SiteId, Step};
use cairn_node::planner::repair::{RepairKinds, plans_for, repair};
use cairn_node::planner::{self, AUTOMATIC_PRIORITY};
use proptest::prelude::*;

mod common;
use common::{build, shape};

const RECOVER: RepairKinds = RepairKinds { recover: true, trim: false };
const TRIM: RepairKinds = RepairKinds { recover: false, trim: true };

/// Kills the sites whose bit is set in `kill` (of the first 16), and declares lost
/// those also set in `lose`. Answers the lost set.
fn kill(view: &mut ClusterView, kill: u16, lose: u16) -> BTreeSet<SiteId> {
    let mut lost = BTreeSet::new();
    for (i, site) in view.sites.iter_mut().enumerate().take(16) {
        if kill >> i & 1 == 1 {
            site.state = SiteState::Dead;
            if lose >> i & 1 == 1 {
                lost.insert(site.site_id);
            }
        }
    }
    lost
}

fn zone(view: &ClusterView, site: SiteId) -> Option<String> {
    view.site(site).and_then(|s| s.zone.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn recovery_restores_replication_from_live_copies(shape in shape(12, 48), k in any::<u16>(), l in any::<u16>()) {
        let mut view = build(&shape);
        let lost = kill(&mut view, k, l);
        let candidates = planner::candidates(&view);
        let plan = repair(&view, &candidates, &lost, RECOVER);
        prop_assert!(plan.trims.is_empty());
        for db in &view.dbs {
            for shard in &db.placement {
                let key = (db.name.clone(), shard.shard);
                let live_ready: BTreeSet<SiteId> = shard
                    .replicas
                    .iter()
                    .filter(|r| r.is_ready() && view.is_live(r.site_id))
                    .map(|r| r.site_id)
                    .collect();
                let adds: Vec<_> = plan.adds.iter().filter(|a| a.0 == db.name && a.1 == shard.shard).collect();
                if live_ready.is_empty() {
                    prop_assert!(plan.lost.contains(&key), "{key:?} has no copy but is not reported lost");
                    prop_assert!(adds.is_empty(), "{key:?} planned with nothing to copy from");
                    continue;
                }
                prop_assert!(!plan.lost.contains(&key));
                let kept: BTreeSet<SiteId> =
                    shard.replicas.iter().map(|r| r.site_id).filter(|s| !lost.contains(s)).collect();
                let mut holders: BTreeSet<SiteId> = shard.replicas.iter().map(|r| r.site_id).collect();
                for (_, _, site, upstreams) in &adds {
                    prop_assert!(candidates.iter().any(|c| c.site == *site), "added on a non-candidate");
                    prop_assert!(holders.insert(*site), "{key:?} added twice on {site:?} or on a holder");
                    prop_assert_eq!(&upstreams.iter().copied().collect::<BTreeSet<_>>(), &live_ready);
                }
                let factor = db.replication() as usize;
                let restored = kept.len() + adds.len();
                if plan.short.contains(&key) {
                    // Short only when every live core site already holds the shard.
                    prop_assert!(candidates.iter().all(|c| holders.contains(&c.site)));
                } else {
                    prop_assert_eq!(restored, factor.max(kept.len()), "{:?}", key);
                }
            }
        }
        // Determinism, whatever the order of the view's sites.
        let mut shuffled = view.clone();
        shuffled.sites.reverse();
        prop_assert_eq!(repair(&shuffled, &planner::candidates(&shuffled), &lost, RECOVER), plan.clone());
        // Plans: one id per db, only adds with upstreams.
        for site_plans in plans_for(&plan, "recover", PlanOrigin::Automatic { planner: SiteId(1) }, AUTOMATIC_PRIORITY).values() {
            prop_assert_eq!(site_plans.values().map(|p| p.plan_id).collect::<BTreeSet<_>>().len(), 1);
            for p in site_plans.values() {
                let adds_only = p.steps.iter().all(|s| matches!(s, Step::AddReplica { upstreams, .. } if !upstreams.is_empty()));
                prop_assert!(adds_only, "{:?}", p.steps);
            }
        }
    }

    #[test]
    fn trim_removes_extras_down_to_the_factor_keeping_zones(shape in shape(10, 32), extra in any::<u64>(), more in any::<u64>()) {
        let mut view = build(&shape);
        // Sites that "came back", or a factor lowered: some shards hold one or two more
        // ready replicas than their factor (two extras once let one leave for the other).
        let live: Vec<SiteId> = view.sites.iter().filter(|s| s.state == SiteState::Live).map(|s| s.site_id).collect();
        for db in &mut view.dbs {
            for shard in &mut db.placement {
                if extra >> (shard.shard % 64) & 1 == 0 {
                    continue;
                }
                let copies = 1 + (more >> (shard.shard % 64) & 1) as usize;
                for _ in 0..copies {
                    if let Some(site) = live.iter().find(|s| !shard.replicas.iter().any(|r| r.site_id == **s)) {
                        let mut copy: ReplicaView = shard.replicas[0].clone();
                        copy.site_id = *site;
                        shard.replicas.push(copy);
                    }
                }
            }
        }
        let candidates = planner::candidates(&view);
        let plan = repair(&view, &candidates, &BTreeSet::new(), TRIM);
        prop_assert!(plan.adds.is_empty());
        for db in &view.dbs {
            for shard in &db.placement {
                let ready: Vec<SiteId> = shard.replicas.iter().filter(|r| r.is_ready()).map(|r| r.site_id).collect();
                let trims: Vec<_> = plan.trims.iter().filter(|t| t.0 == db.name && t.1 == shard.shard).collect();
                let factor = db.replication() as usize;
                prop_assert_eq!(trims.len(), ready.len().saturating_sub(factor), "{}/{}", db.name, shard.shard);
                let leaving: BTreeSet<SiteId> = trims.iter().map(|t| t.2).collect();
                let staying: Vec<SiteId> = ready.iter().copied().filter(|s| !leaving.contains(s)).collect();
                for (_, _, victim, to) in &trims {
                    prop_assert!(ready.contains(victim) && staying.contains(to) && victim != to);
                }
                let zones_before: BTreeSet<_> = ready.iter().map(|s| zone(&view, *s)).collect();
                let zones_after: BTreeSet<_> = staying.iter().map(|s| zone(&view, *s)).collect();
                prop_assert_eq!(zones_after.len(), zones_before.len().min(factor.max(staying.len())));
            }
        }
    }
}

#[test]
fn a_db_with_a_plan_in_flight_is_left_alone() {
    let mut view =
        build(&common::Shape { old: 4, new: 1, zones: 1, capacities: false, dbs: vec![(4, 2)], dead: 0 });
    let lost = kill(&mut view, 0b1, 0b1);
    let candidates = planner::candidates(&view);
    assert!(!repair(&view, &candidates, &lost, RECOVER).adds.is_empty());
    view.plans.push(cairn_gossip::view::PlanView {
        db: DbName::new("db0").unwrap(),
        site_id: SiteId(5),
        plan_id: cairn_inventory::PlanId(1),
        priority: 10,
        step: 0,
        steps: 1,
        status: "running".into(),
    });
    assert!(repair(&view, &candidates, &lost, RECOVER).adds.is_empty());
}

#[test]
fn a_site_is_lost_once_dead_for_long_enough_even_if_never_seen_alive_here() {
    use cairn_node::automation::lost_sites;
    use std::time::Duration;
    let mut view =
        build(&common::Shape { old: 3, new: 0, zones: 1, capacities: false, dbs: vec![(1, 2)], dead: 0 });
    let (seen, unseen) = (view.sites[0].site_id, view.sites[1].site_id);
    view.sites[0].state = SiteState::Dead;
    view.sites[0].last_seen_ms = Some(10_000);
    view.sites[1].state = SiteState::Dead;
    view.sites[1].last_seen_ms = None;
    let after = Duration::from_secs(60);
    // This site started at 50 s: the one it never saw counts from then.
    assert!(lost_sites(&view, 69_000, 50_000, after).is_empty());
    assert_eq!(lost_sites(&view, 71_000, 50_000, after), BTreeSet::from([seen]));
    assert_eq!(lost_sites(&view, 111_000, 50_000, after), BTreeSet::from([seen, unseen]));
}
