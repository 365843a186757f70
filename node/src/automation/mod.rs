//! Automation: the planner of record turns cluster changes into plans.
//!
//! The live core site with the lowest site id is the planner of record. Once the set of
//! live sites has been stable for a few rounds, it allocates the shards no site holds
//! (every shard of a new db) of dbs with no plan in flight ([`allocate`]). Then, when no plan is in flight or
//! undelivered and a few quiet rounds have passed, it takes the first of
//! ([`next_change`], pure): **repair** — recover shards that had replicas on sites dead
//! for longer than `lost_after` (new replicas catching up from live copies), and trim
//! shards that have more ready replicas than their factor (a lost site came back);
//! **rebalance** — when no dead site holds replicas, even out replica counts (a site
//! joined) and empty draining sites. Each site gets its plan (`Schedule`), again every
//! round until it has answered, so a lost delivery is retried; a pending plan is given up
//! when the view moves on or it waits too long. What to do is decided by the pure state
//! machine in [`state`] ([`Automation`]); this module's [`run`] delivers. Allocations
//! are deterministic (two planners of a brand-new cluster send the same plan); repair
//! and rebalance plan ids also name the planner's process and the db's epoch, which goes
//! up when a site answers that it already ran a plan (`AlreadyEnded`: the same change
//! made again), so the change is made anew instead of being taken as done.

mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::{ClusterView, SiteState};
use cairn_inventory::{DbName, Inventory, InventoryError, OfferOutcome, PlanOrigin, SiteId};
use cairn_transport::{Endpoint, Request, Response};
use tokio::sync::watch;

pub use state::{ALLOCATION_SETTLE_ROUNDS, Answer, Automation, Event, MAX_PENDING_ROUNDS, Offer};

use crate::planner::repair::{RepairKinds, repair};
use crate::planner::reshape::reshape;
use crate::planner::{self, AUTOMATIC_PRIORITY, SitePlans};

/// Rounds the set of live sites must stay the same before the planner acts.
pub const STABLE_ROUNDS: u32 = 6;

/// The planner of record of `view`: the live core site with the lowest id.
pub fn planner_of_record(view: &ClusterView) -> Option<SiteId> {
    planner::candidates(view).iter().map(|c| c.site).min()
}

/// Dbs that need allocating: known, a shard with no replica on any site in the view (a
/// new db, or one whose allocation a site never took its part of), no plan in flight.
pub fn dbs_to_allocate(view: &ClusterView) -> Vec<&cairn_gossip::view::DbView> {
    view.dbs
        .iter()
        .filter(|db| !planner::allocate::missing_shards(db).is_empty())
        .filter(|db| !view.plans.iter().any(|p| p.db == db.name))
        .collect()
}

/// Sites dead for longer than `lost_after` by `view` at `now_ms`. A dead site this
/// process never saw alive (it died before this site started) counts as last seen at
/// `started_ms`, so a whole-cluster restart does not leave a dead site unjudged.
pub fn lost_sites(
    view: &ClusterView,
    now_ms: u64,
    started_ms: u64,
    lost_after: Duration,
) -> BTreeSet<SiteId> {
    view.sites
        .iter()
        .filter(|s| s.state == SiteState::Dead)
        .filter(|s| {
            let seen = s.last_seen_ms.unwrap_or(started_ms);
            now_ms.saturating_sub(seen) > lost_after.as_millis() as u64
        })
        .map(|s| s.site_id)
        .collect()
}

/// A change automation makes, and its plans per db and site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `repair` or `rebalance`.
    pub kind: &'static str,
    /// The plans.
    pub plans: BTreeMap<DbName, SitePlans>,
    /// Shards that cannot be recovered (no live copy), reported.
    pub lost_shards: Vec<(DbName, u32)>,
}

/// Automation's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutomationConfig {
    /// How often it looks (the gossip interval).
    pub every: Duration,
    /// How long a site must be dead before its shards are recovered elsewhere.
    pub lost_after: Duration,
    /// Recover and trim on its own.
    pub repair: bool,
    /// Rebalance (and empty draining sites) on its own.
    pub rebalance: bool,
}

/// What automation should do next in `view`, planned by `me`, with `lost` sites given
/// up on: repair first, then rebalance (only while no dead site holds replicas, so
/// recovery is not pre-empted), each if `config` allows it. `None` while a plan is in
/// flight, or nothing to do.
pub fn next_change(
    view: &ClusterView,
    me: SiteId,
    lost: &BTreeSet<SiteId>,
    config: &AutomationConfig,
) -> Option<Change> {
    if !view.plans.is_empty() {
        return None;
    }
    let candidates = planner::candidates(view);
    let origin = PlanOrigin::Automatic { planner: me };
    let kinds = RepairKinds { recover: config.repair, trim: config.repair };
    let fixed = repair(view, &candidates, lost, kinds);
    if !fixed.adds.is_empty() || !fixed.trims.is_empty() {
        let plans = planner::repair::plans_for(&fixed, "repair", origin, AUTOMATIC_PRIORITY);
        return Some(Change { kind: "repair", plans, lost_shards: fixed.lost });
    }
    let dead_hold = view.sites.iter().any(|s| s.state == SiteState::Dead && s.replicas > 0);
    if dead_hold || !config.rebalance {
        return None;
    }
    let moves = reshape(view, &candidates, &BTreeSet::new()).moves;
    if moves.is_empty() {
        return None;
    }
    let plans = planner::reshape::plans_for(view, &moves, "rebalance", origin, AUTOMATIC_PRIORITY);
    Some(Change { kind: "rebalance", plans, lost_shards: fixed.lost })
}

/// Runs automation for site `me` until the task is dropped: each round, the state
/// machine ([`Automation`]) says what to offer; this delivers it and reports back.
pub async fn run(
    me: SiteId,
    inventory: Arc<Inventory>,
    endpoint: Endpoint,
    mut view: watch::Receiver<Arc<ClusterView>>,
    config: AutomationConfig,
) {
    let mut automation = Automation::new(me, config, cairn_inventory::now_ms());
    let mut ticker = tokio::time::interval(config.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = view.borrow_and_update().clone();
        let (offers, events) = automation.round(&current, cairn_inventory::now_ms());
        events.iter().for_each(log);
        for offer in offers {
            let answer = deliver(me, &inventory, &endpoint, &current, &offer).await;
            if let Some(event) = automation.answered(&offer.plan.db, offer.plan.plan_id, offer.site, answer) {
                log(&event);
            }
        }
    }
}

fn log(event: &Event) {
    match event {
        Event::Allocating { db, plan, sites } => {
            tracing::info!(%db, sites, plan = %plan.short(), "allocating")
        }
        Event::Planned { kind, dbs, lost_sites, lost_shards } => {
            tracing::info!(kind, dbs, lost_sites, lost_shards, "planning")
        }
        Event::Unsafe { why } => tracing::error!(%why, "a planned change is unsafe; not delivered"),
        Event::Dropped { db, plan, why } => {
            tracing::info!(%db, plan = %plan.short(), %why, "pending plan given up")
        }
    }
}

/// Offers one plan to its site (this one through its own inventory) and classes the
/// answer.
async fn deliver(
    me: SiteId,
    inv: &Arc<Inventory>,
    endpoint: &Endpoint,
    view: &ClusterView,
    offer: &Offer,
) -> Answer {
    let (site, plan) = (offer.site, &offer.plan);
    let outcome = if site == me {
        let (inv, plan) = (inv.clone(), plan.clone());
        match crate::supervisor::blocking(move || inv.offer(&plan)).await {
            Ok(outcome) => Ok(outcome),
            Err(InventoryError::PlanRejected(reason)) => Err(reason.to_string()),
            Err(error) => {
                tracing::warn!(%error, "offering a plan to this site failed; retrying next round");
                return Answer::NotNow;
            }
        }
    } else {
        let Some(addr) = view.site(site).and_then(|s| s.addr.parse().ok()) else { return Answer::NotNow };
        match endpoint.request(addr, &Request::Schedule(plan.clone())).await {
            Ok(Response::Scheduled(outcome)) => Ok(outcome),
            Ok(Response::Rejected { reason }) => Err(reason),
            // "Not yet" (the db's gossip has not reached it, it is busy): again next round.
            Ok(Response::Error(error)) => {
                tracing::debug!(site = %site.short(), %error, "plan not taken yet; retrying next round");
                return Answer::NotNow;
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(error) => {
                tracing::debug!(site = %site.short(), %error, "plan delivery failed; retrying next round");
                return Answer::NotNow;
            }
        }
    };
    tracing::info!(db = %plan.db, site = %site.short(), outcome = ?outcome, "plan delivered");
    match outcome {
        Ok(OfferOutcome::AlreadyEnded { .. }) => Answer::AlreadyEnded,
        _ => Answer::Taken,
    }
}
