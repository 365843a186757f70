//! Automation: the planner of record turns cluster changes into plans.
//!
//! The live core site with the lowest site id is the planner of record. Once the set of
//! live sites has been stable for a few rounds, it allocates dbs with no replica
//! anywhere and no plan in flight ([`allocate`]). Then, when no plan is in flight or
//! undelivered and a few quiet rounds have passed, it takes the first of
//! ([`next_change`], pure): **repair** — recover shards that had replicas on sites dead
//! for longer than `lost_after` (new replicas catching up from live copies), and trim
//! shards that have more ready replicas than their factor (a lost site came back);
//! **rebalance** — when no dead site holds replicas, even out replica counts (a site
//! joined) and empty draining sites. Each site gets its plan (`Schedule`), again every
//! round until it has answered, so a lost delivery is retried. Plans are deterministic,
//! so a second planner working from the same view sends the same plan ids, and
//! redelivery is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::{ClusterView, SiteState};
use cairn_inventory::{DbName, Inventory, Plan, PlanId, PlanOrigin, SiteId};
use cairn_transport::{Endpoint, Request, Response};
use tokio::sync::watch;

use crate::planner::repair::{RepairKinds, repair};
use crate::planner::reshape::reshape;
use crate::planner::{self, AUTOMATIC_PRIORITY, SitePlans, allocate::allocate};

/// Rounds the set of live sites must stay the same before the planner acts.
const STABLE_ROUNDS: u32 = 6;

/// Plans made but not yet answered by their site.
type Undelivered = BTreeMap<(DbName, PlanId), BTreeMap<SiteId, Plan>>;

/// The planner of record of `view`: the live core site with the lowest id.
pub fn planner_of_record(view: &ClusterView) -> Option<SiteId> {
    planner::candidates(view).iter().map(|c| c.site).min()
}

/// Dbs that need allocating: known, no replica anywhere, no plan in flight.
pub fn dbs_to_allocate(view: &ClusterView) -> Vec<&cairn_gossip::view::DbView> {
    view.dbs
        .iter()
        .filter(|db| db.placement.iter().all(|s| s.replicas.is_empty()))
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

/// Runs automation for site `me` until the task is dropped.
pub async fn run(
    me: SiteId,
    inventory: Arc<Inventory>,
    endpoint: Endpoint,
    mut view: watch::Receiver<Arc<ClusterView>>,
    config: AutomationConfig,
) {
    let mut undelivered = Undelivered::new();
    let mut live_before = BTreeSet::new();
    let mut stable = 0u32;
    // Rounds with no plan in flight or undelivered.
    let mut quiet = 0u32;
    let started_ms = cairn_inventory::now_ms();
    let mut ticker = tokio::time::interval(config.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = view.borrow_and_update().clone();
        let live: BTreeSet<SiteId> = planner::candidates(&current).iter().map(|c| c.site).collect();
        stable = if live == live_before { stable.saturating_add(1) } else { 0 };
        live_before = live;
        if stable < STABLE_ROUNDS || planner_of_record(&current) != Some(me) {
            continue;
        }
        let candidates = planner::candidates(&current);
        for db in dbs_to_allocate(&current) {
            let plans = allocate(db, &candidates, me);
            let Some(plan_id) = plans.values().next().map(|p| p.plan_id) else { continue };
            let change = BTreeMap::from([(db.name.clone(), plans.clone())]);
            if let Err(why) = planner::check::check_change(&current, &change) {
                tracing::error!(db = %db.name, %why, "an allocation plan is unsafe; not delivered");
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) =
                undelivered.entry((db.name.clone(), plan_id))
            {
                tracing::info!(db = %db.name, sites = plans.len(), plan = %plan_id.short(), "allocating");
                slot.insert(plans);
            }
        }
        quiet = if current.plans.is_empty() && undelivered.is_empty() { quiet.saturating_add(1) } else { 0 };
        if quiet >= STABLE_ROUNDS {
            let lost = lost_sites(&current, cairn_inventory::now_ms(), started_ms, config.lost_after);
            let change = next_change(&current, me, &lost, &config);
            let unsafe_change =
                change.as_ref().and_then(|c| planner::check::check_change(&current, &c.plans).err());
            if let Some(why) = unsafe_change {
                tracing::error!(%why, "a planned change is unsafe; not delivered");
            } else if let Some(change) = change {
                let lost_shards = change.lost_shards.len();
                tracing::info!(
                    kind = change.kind,
                    dbs = change.plans.len(),
                    lost_sites = lost.len(),
                    lost_shards,
                    "planning"
                );
                for (db, plans) in change.plans {
                    let Some(plan_id) = plans.values().next().map(|p| p.plan_id) else { continue };
                    undelivered.entry((db, plan_id)).or_insert(plans);
                }
                quiet = 0;
            }
        }
        deliver(me, &inventory, &endpoint, &current, &mut undelivered).await;
    }
}

/// Offers every undelivered plan to its site; forgets those that were answered.
async fn deliver(
    me: SiteId,
    inv: &Arc<Inventory>,
    endpoint: &Endpoint,
    view: &ClusterView,
    undelivered: &mut Undelivered,
) {
    for plans in undelivered.values_mut() {
        let mut answered = Vec::new();
        for (site, plan) in plans.iter() {
            let outcome = if *site == me {
                let (inv, plan) = (inv.clone(), plan.clone());
                match crate::supervisor::blocking(move || inv.offer(&plan)).await {
                    Ok(outcome) => Some(format!("{outcome:?}")),
                    Err(error) => Some(format!("rejected: {error}")),
                }
            } else {
                let Some(addr) = view.site(*site).and_then(|s| s.addr.parse().ok()) else { continue };
                match endpoint.request(addr, &Request::Schedule(plan.clone())).await {
                    Ok(Response::Scheduled(outcome)) => Some(format!("{outcome:?}")),
                    Ok(Response::Rejected { reason }) => Some(format!("rejected: {reason}")),
                    Ok(other) => Some(format!("unexpected answer {other:?}")),
                    Err(error) => {
                        tracing::debug!(site = %site.short(), %error, "plan delivery failed; retrying next round");
                        None
                    }
                }
            };
            if let Some(outcome) = outcome {
                tracing::info!(db = %plan.db, site = %site.short(), %outcome, "plan delivered");
                answered.push(*site);
            }
        }
        for site in answered {
            plans.remove(&site);
        }
    }
    undelivered.retain(|_, plans| !plans.is_empty());
}
