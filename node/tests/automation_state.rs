//! The automation state machine on its own, with made-up views and answers: a change a
//! site already ran is made again under a new id (not counted as delivered); a change
//! no site takes is given up and made again; one the view made unsafe is dropped before
//! it is offered again; one a site has begun is offered to the rest until they take it;
//! only the planner of record offers anything. Then the same rules on random clusters
//! with random answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_gossip::SiteState;
use cairn_gossip::view::{ClusterView, PlacementState, PlanView, ReplicaView};
use cairn_inventory::{PlanId, SiteId, Step};
use cairn_node::automation::{
    Answer, Automation, AutomationConfig, Event, MAX_PENDING_ROUNDS, Offer, STABLE_ROUNDS, planner_of_record,
};
use cairn_node::planner;
use proptest::prelude::*;

mod common;
use common::{Shape, build};

const CONFIG: AutomationConfig = AutomationConfig {
    every: Duration::from_millis(100),
    lost_after: Duration::from_secs(60),
    repair: true,
    rebalance: true,
};

/// Three sites hold a db of 8 shards × 2; a fourth joined with nothing: a rebalance.
fn joined() -> ClusterView {
    build(&Shape { old: 3, new: 1, zones: 1, capacities: false, dbs: vec![(8, 2)], dead: 0 })
}

fn me(view: &ClusterView) -> SiteId {
    planner_of_record(view).unwrap()
}

/// Rounds (answering `NotNow` to every offer) until something is offered; its round.
fn until_offered(auto: &mut Automation, view: &ClusterView, now: &mut u64) -> (Vec<Offer>, u64) {
    for round in 1..=100 {
        *now += 100;
        let (offers, _) = auto.round(view, *now);
        if !offers.is_empty() {
            return (offers, round);
        }
    }
    panic!("nothing offered in 100 rounds");
}

fn ids(offers: &[Offer]) -> BTreeSet<PlanId> {
    offers.iter().map(|o| o.plan.plan_id).collect()
}

fn steps(offers: &[Offer]) -> BTreeMap<SiteId, Vec<Step>> {
    offers.iter().map(|o| (o.site, o.plan.steps.clone())).collect()
}

#[test]
fn a_change_a_site_already_ran_is_made_again_under_a_new_id() {
    let view = joined();
    let mut auto = Automation::new(me(&view), CONFIG, 1_000);
    let mut now = 10_000;
    let (first, rounds) = until_offered(&mut auto, &view, &mut now);
    assert_eq!(rounds, 2 * STABLE_ROUNDS as u64, "stable rounds, then quiet rounds, then a plan");
    assert_eq!(ids(&first).len(), 1, "one change, one id for every site's part");
    let event = auto.answered(&first[0].plan.db, first[0].plan.plan_id, first[0].site, Answer::AlreadyEnded);
    assert!(matches!(event, Some(Event::Dropped { .. })), "{event:?}");
    assert_eq!(auto.pending(), 0, "a change a site already ran is not pending");
    let (again, _) = until_offered(&mut auto, &view, &mut now);
    assert_eq!(steps(&again), steps(&first), "the same change");
    assert!(ids(&again).is_disjoint(&ids(&first)), "under a new id, so the sites run it");
}

#[test]
fn an_untaken_change_is_offered_every_round_then_given_up_and_made_again() {
    let view = joined();
    let mut auto = Automation::new(me(&view), CONFIG, 1_000);
    let mut now = 0;
    let (first, _) = until_offered(&mut auto, &view, &mut now);
    let mut given_up = None;
    for round in 1..=MAX_PENDING_ROUNDS + 2 {
        now += 100;
        let (offers, events) = auto.round(&view, now);
        if events.iter().any(|e| matches!(e, Event::Dropped { why, .. } if why.contains("not taken"))) {
            assert!(offers.is_empty(), "given up, not offered that round");
            given_up = Some(round);
            break;
        }
        assert_eq!(offers, first, "offered again, unchanged, until given up");
    }
    assert_eq!(given_up, Some(MAX_PENDING_ROUNDS), "given up after {MAX_PENDING_ROUNDS} rounds");
    let (again, _) = until_offered(&mut auto, &view, &mut now);
    assert_eq!(steps(&again), steps(&first), "made again while still needed");
}

#[test]
fn a_pending_change_the_view_made_unsafe_is_dropped_at_once() {
    let mut view = joined();
    let mut auto = Automation::new(me(&view), CONFIG, 1_000);
    let mut now = 0;
    let (first, _) = until_offered(&mut auto, &view, &mut now);
    // The site the change fills dies before taking its part.
    let target = first
        .iter()
        .find(|o| o.plan.steps.iter().any(|s| matches!(s, Step::AddReplica { .. })))
        .map(|o| o.site)
        .unwrap();
    view.sites.iter_mut().find(|s| s.site_id == target).unwrap().state = SiteState::Dead;
    now += 100;
    let (offers, events) = auto.round(&view, now);
    assert!(offers.is_empty(), "an unsafe plan offered: {offers:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::Dropped { why, .. } if why.contains("view moved on"))),
        "{events:?}"
    );
    assert_eq!(auto.pending(), 0);
}

#[test]
fn a_begun_change_is_offered_to_the_other_sites_until_they_take_it() {
    let mut view = joined();
    let mut auto = Automation::new(me(&view), CONFIG, 1_000);
    let mut now = 0;
    let (first, _) = until_offered(&mut auto, &view, &mut now);
    assert!(first.len() >= 2, "a rebalance involves the new site and at least one holder");
    let adder =
        first.iter().find(|o| o.plan.steps.iter().any(|s| matches!(s, Step::AddReplica { .. }))).unwrap();
    auto.answered(&adder.plan.db, adder.plan.plan_id, adder.site, Answer::Taken);
    // The new site has begun: its replicas catch up and its plan is in flight, which the
    // change's own safety check (made for a change not begun) would now refuse.
    let db = view.dbs[0].name.clone();
    for step in &adder.plan.steps {
        if let Step::AddReplica { shard, .. } = step {
            let placement = &mut view.dbs[0].placement[*shard as usize];
            let mut copy: ReplicaView = placement.replicas[0].clone();
            copy.site_id = adder.site;
            copy.state = PlacementState::CatchingUp;
            placement.replicas.push(copy);
        }
    }
    view.plans.push(PlanView {
        db,
        site_id: adder.site,
        plan_id: adder.plan.plan_id,
        priority: adder.plan.priority,
        step: 0,
        steps: adder.plan.steps.len() as u32,
        status: "running".into(),
    });
    let rest: Vec<Offer> = first.iter().filter(|o| o.site != adder.site).cloned().collect();
    for _ in 0..10 {
        now += 100;
        let (offers, events) = auto.round(&view, now);
        assert_eq!(offers, rest, "the rest offered on: {events:?}");
    }
    for offer in &rest {
        auto.answered(&offer.plan.db, offer.plan.plan_id, offer.site, Answer::Taken);
    }
    assert_eq!(auto.pending(), 0);
    now += 100;
    assert!(auto.round(&view, now).0.is_empty(), "a plan in flight: nothing new");
}

#[test]
fn only_the_planner_of_record_offers() {
    let view = joined();
    let other = view.sites.iter().map(|s| s.site_id).filter(|s| *s != me(&view)).min().unwrap();
    let mut auto = Automation::new(other, CONFIG, 1_000);
    for round in 0..200 {
        assert!(auto.round(&view, round * 100).0.is_empty());
    }
}

fn answer(bits: u64, n: usize) -> Answer {
    match bits >> (2 * (n % 32)) & 3 {
        0 => Answer::NotNow,
        1 => Answer::AlreadyEnded,
        _ => Answer::Taken,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// On random clusters, answered at random: only the planner of record offers; every
    /// change passes the safety check against the view of the round it is first offered
    /// in; an id a site answered `AlreadyEnded` to is never offered again; every site's
    /// part of one change has one id.
    #[test]
    fn offers_are_safe_and_never_repeat_a_plan_already_run(
        shape in common::shape(8, 16),
        answers in any::<u64>(),
        seed in 0..4usize,
    ) {
        let view = build(&shape);
        let sites: Vec<SiteId> = view.sites.iter().map(|s| s.site_id).collect();
        let who = sites[seed % sites.len()];
        let mut auto = Automation::new(who, CONFIG, 7);
        let mut ended: BTreeSet<PlanId> = BTreeSet::new();
        let mut seen: BTreeSet<PlanId> = BTreeSet::new();
        let mut n = 0;
        for round in 0..(4 * STABLE_ROUNDS as u64 + 20) {
            let (offers, _) = auto.round(&view, 10_000 + round * 100);
            if planner_of_record(&view) != Some(who) {
                prop_assert!(offers.is_empty());
            }
            let mut by_db: BTreeMap<_, BTreeMap<SiteId, cairn_inventory::Plan>> = BTreeMap::new();
            for offer in &offers {
                prop_assert!(!ended.contains(&offer.plan.plan_id), "offered again after AlreadyEnded");
                by_db.entry((offer.plan.db.clone(), offer.plan.plan_id)).or_default().insert(offer.site, offer.plan.clone());
            }
            for ((db, id), plans) in by_db {
                if seen.insert(id) {
                    let change = BTreeMap::from([(db, plans)]);
                    prop_assert!(planner::check::check_change(&view, &change).is_ok(), "{:?}", change);
                }
            }
            for offer in &offers {
                let a = answer(answers, n);
                n += 1;
                if a == Answer::AlreadyEnded {
                    ended.insert(offer.plan.plan_id);
                }
                auto.answered(&offer.plan.db, offer.plan.plan_id, offer.site, a);
            }
        }
    }
}
