//! Automation: the planner of record turns cluster changes into plans.
//!
//! The live core site with the lowest site id is the planner of record. Once the view
//! has been stable for a few rounds, it looks for dbs with no replica anywhere and no
//! plan in flight, runs [`allocate`], and delivers each site its plan (`Schedule`) —
//! again every round until that site has answered, so a lost delivery is retried. Plans
//! are deterministic, so a second planner working from the same view sends the same plan
//! ids, and redelivery is harmless. (Rebalance, recovery and trim come with issue 6.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, Inventory, Plan, PlanId, SiteId};
use cairn_transport::{Endpoint, Request, Response};
use tokio::sync::watch;

use crate::planner::{self, allocate::allocate};

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

/// Runs automation for site `me` until the task is dropped.
pub async fn run(
    me: SiteId,
    inventory: Arc<Inventory>,
    endpoint: Endpoint,
    mut view: watch::Receiver<Arc<ClusterView>>,
    every: Duration,
) {
    let mut undelivered = Undelivered::new();
    let mut live_before = BTreeSet::new();
    let mut stable = 0u32;
    let mut ticker = tokio::time::interval(every);
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
            if let std::collections::btree_map::Entry::Vacant(slot) =
                undelivered.entry((db.name.clone(), plan_id))
            {
                tracing::info!(db = %db.name, sites = plans.len(), plan = %plan_id.short(), "allocating");
                slot.insert(plans);
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
                match tokio::task::spawn_blocking(move || inv.offer(&plan)).await {
                    Ok(Ok(outcome)) => Some(format!("{outcome:?}")),
                    Ok(Err(error)) => Some(format!("rejected: {error}")),
                    Err(_) => None,
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
