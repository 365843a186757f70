//! Automation as a state machine, pure: [`Automation::round`] takes the view and the time
//! and answers the plans to offer this round (and what happened, for the log);
//! [`Automation::answered`] takes what a site said to one offer. The shell in
//! [`super::run`] only delivers and reports back; the simulation drives the same code.
//!
//! Plans made but not yet taken stay *pending* and are offered again every round, until:
//! their site takes them; a site answers that it already ran that plan (`AlreadyEnded`:
//! the same change was made again — the change is dropped and the db's epoch bumped, so
//! the next plan of it gets a new id); the view has moved on so that the change is no
//! longer safe ([`crate::planner::check`]; checked only while no site has taken its
//! part); [`MAX_PENDING_ROUNDS`] pass; or this site
//! stops being the planner of record.

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, Plan, PlanId, SiteId};

use super::{AutomationConfig, STABLE_ROUNDS, dbs_to_allocate, lost_sites, next_change, planner_of_record};
use crate::planner::{self, SitePlans, allocate::allocate};

/// Rounds a made plan is offered (the round it is made in counts) before it is given up
/// (and made again if still needed).
pub const MAX_PENDING_ROUNDS: u64 = 120;

/// Rounds after allocating a db's shards before allocating that db again: the sites that
/// took their parts need a few rounds to show the replicas and plans in gossip.
pub const ALLOCATION_SETTLE_ROUNDS: u64 = 30;

/// A plan offered to a site this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The site.
    pub site: SiteId,
    /// Its plan.
    pub plan: Plan,
}

/// What a round did, for the log (and the simulation's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A db with no replica is being placed.
    Allocating {
        /// The db.
        db: DbName,
        /// The plan.
        plan: PlanId,
        /// How many sites get a part.
        sites: usize,
    },
    /// A repair or rebalance was planned.
    Planned {
        /// `repair` or `rebalance`.
        kind: &'static str,
        /// Dbs with plans.
        dbs: usize,
        /// Sites given up on.
        lost_sites: usize,
        /// Shards with no live copy.
        lost_shards: usize,
    },
    /// A change failed its safety check and was not offered.
    Unsafe {
        /// Why.
        why: String,
    },
    /// A pending change was given up.
    Dropped {
        /// The db.
        db: DbName,
        /// The plan.
        plan: PlanId,
        /// Why.
        why: String,
    },
}

/// What a site said to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It took it, or answered for good (accepted, pending already, ignored for a plan
    /// of higher priority, refused).
    Taken,
    /// It ran this very plan before: the change was made again.
    AlreadyEnded,
    /// No answer (unreachable, busy, not knowing the db yet): offered again next round.
    NotNow,
}

#[derive(Debug, Clone)]
struct Pending {
    /// The plans of sites that have not taken theirs yet.
    plans: SitePlans,
    made_round: u64,
    /// Some site took its part: the rest is offered on (the view now shows the change
    /// under way, so the safety check, made for a change not begun, no longer applies).
    begun: bool,
}

/// Automation's state on one site.
#[derive(Debug, Clone)]
pub struct Automation {
    me: SiteId,
    config: AutomationConfig,
    /// When this process started (ms): its generation, in plan ids, and when dead sites
    /// it never saw alive were last seen.
    started_ms: u64,
    round: u64,
    live_before: BTreeSet<SiteId>,
    stable: u32,
    /// Rounds with no plan in flight or pending.
    quiet: u32,
    pending: BTreeMap<(DbName, PlanId), Pending>,
    /// Per db, how many times a change of it was made again (`AlreadyEnded`).
    epochs: BTreeMap<DbName, u64>,
    /// Per db, the round its shards were last allocated.
    allocated: BTreeMap<DbName, u64>,
}

impl Automation {
    /// Automation for site `me`, a process started at `started_ms`.
    pub fn new(me: SiteId, config: AutomationConfig, started_ms: u64) -> Self {
        Self {
            me,
            config,
            started_ms,
            round: 0,
            live_before: BTreeSet::new(),
            stable: 0,
            quiet: 0,
            pending: BTreeMap::new(),
            epochs: BTreeMap::new(),
            allocated: BTreeMap::new(),
        }
    }

    /// Changes made and not yet taken by every site.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One round at `now_ms` with `view`: the offers to make, and what happened.
    pub fn round(&mut self, view: &ClusterView, now_ms: u64) -> (Vec<Offer>, Vec<Event>) {
        self.round += 1;
        let mut events = Vec::new();
        let live: BTreeSet<SiteId> = planner::candidates(view).iter().map(|c| c.site).collect();
        self.stable = if live == self.live_before { self.stable.saturating_add(1) } else { 0 };
        self.live_before = live;
        if planner_of_record(view) != Some(self.me) {
            for ((db, plan), _) in std::mem::take(&mut self.pending) {
                events.push(Event::Dropped {
                    db,
                    plan,
                    why: "this site is no longer the planner of record".into(),
                });
            }
            return (Vec::new(), events);
        }
        self.expire(view, &mut events);
        if self.stable < STABLE_ROUNDS {
            return (self.offers(), events);
        }
        self.allocate(view, &mut events);
        self.quiet =
            if view.plans.is_empty() && self.pending.is_empty() { self.quiet.saturating_add(1) } else { 0 };
        if self.quiet >= STABLE_ROUNDS {
            self.plan_change(view, now_ms, &mut events);
        }
        (self.offers(), events)
    }

    /// What `site` said to the offer of `db`'s plan `plan`.
    pub fn answered(&mut self, db: &DbName, plan: PlanId, site: SiteId, answer: Answer) -> Option<Event> {
        let key = (db.clone(), plan);
        match answer {
            Answer::NotNow => None,
            Answer::Taken => {
                if let Some(pending) = self.pending.get_mut(&key) {
                    pending.plans.remove(&site);
                    pending.begun = true;
                    if pending.plans.is_empty() {
                        self.pending.remove(&key);
                    }
                }
                None
            }
            Answer::AlreadyEnded => {
                self.pending.remove(&key)?;
                *self.epochs.entry(db.clone()).or_default() += 1;
                let why = format!("site {} ran this plan before: the change was made again", site.short());
                Some(Event::Dropped { db: db.clone(), plan, why })
            }
        }
    }

    fn offers(&self) -> Vec<Offer> {
        self.pending
            .values()
            .flat_map(|p| p.plans.iter().map(|(site, plan)| Offer { site: *site, plan: plan.clone() }))
            .collect()
    }

    /// Gives up pending changes that waited too long or that the view made unsafe.
    fn expire(&mut self, view: &ClusterView, events: &mut Vec<Event>) {
        let round = self.round;
        let mut dropped = Vec::new();
        for ((db, plan), pending) in &self.pending {
            let why = if round.saturating_sub(pending.made_round) >= MAX_PENDING_ROUNDS {
                Some(format!("offered in {MAX_PENDING_ROUNDS} rounds, not taken"))
            } else if pending.begun {
                None
            } else {
                let change = BTreeMap::from([(db.clone(), pending.plans.clone())]);
                planner::check::check_change(view, &change)
                    .err()
                    .map(|why| format!("the view moved on: {why}"))
            };
            if let Some(why) = why {
                dropped.push((db.clone(), *plan, why));
            }
        }
        for (db, plan, why) in dropped {
            self.pending.remove(&(db.clone(), plan));
            events.push(Event::Dropped { db, plan, why });
        }
    }

    /// Places the shards no site holds, of dbs with no plan in flight (not again within
    /// [`ALLOCATION_SETTLE_ROUNDS`] of the last allocation of the db).
    fn allocate(&mut self, view: &ClusterView, events: &mut Vec<Event>) {
        let candidates = planner::candidates(view);
        for db in dbs_to_allocate(view) {
            let mut plans = allocate(db, &candidates, self.me);
            // The first allocation of a db is the same from any planner (a new cluster
            // may have two for a moment); made again, it gets the db's epoch.
            if let Some(epoch) = self.epochs.get(&db.name) {
                planner::made_from(plans.values_mut(), &epoch.to_be_bytes());
            }
            let Some(plan_id) = plans.values().next().map(|p| p.plan_id) else { continue };
            if self.pending.keys().any(|(name, _)| *name == db.name) {
                continue;
            }
            let recently =
                self.allocated.get(&db.name).is_some_and(|r| self.round < r + ALLOCATION_SETTLE_ROUNDS);
            if recently {
                continue;
            }
            let change = BTreeMap::from([(db.name.clone(), plans.clone())]);
            if let Err(why) = planner::check::check_change(view, &change) {
                events.push(Event::Unsafe { why: format!("allocating {}: {why}", db.name) });
                continue;
            }
            events.push(Event::Allocating { db: db.name.clone(), plan: plan_id, sites: plans.len() });
            self.allocated.insert(db.name.clone(), self.round);
            self.pending
                .insert((db.name.clone(), plan_id), Pending { plans, made_round: self.round, begun: false });
        }
    }

    /// Repair, else rebalance, as [`next_change`] says; plan ids name this planner's
    /// generation and each db's epoch.
    fn plan_change(&mut self, view: &ClusterView, now_ms: u64, events: &mut Vec<Event>) {
        let lost = lost_sites(view, now_ms, self.started_ms, self.config.lost_after);
        let Some(mut change) = next_change(view, self.me, &lost, &self.config) else { return };
        if let Err(why) = planner::check::check_change(view, &change.plans) {
            events.push(Event::Unsafe { why });
            return;
        }
        events.push(Event::Planned {
            kind: change.kind,
            dbs: change.plans.len(),
            lost_sites: lost.len(),
            lost_shards: change.lost_shards.len(),
        });
        for (db, plans) in &mut change.plans {
            let epoch = self.epochs.get(db).copied().unwrap_or(0);
            let salt = [self.started_ms.to_be_bytes(), epoch.to_be_bytes()].concat();
            planner::made_from(plans.values_mut(), &salt);
        }
        for (db, plans) in change.plans {
            let Some(plan_id) = plans.values().next().map(|p| p.plan_id) else { continue };
            self.pending.entry((db, plan_id)).or_insert(Pending {
                plans,
                made_round: self.round,
                begun: false,
            });
        }
        self.quiet = 0;
    }
}
