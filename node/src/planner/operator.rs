//! Operator requests: a [`PlanRequest`] and a view in, a [`PlanPreview`] out (the moves,
//! what is stuck, and the plans with where to deliver them). Pure, like every planner:
//! `cairn ctl plan preview` shows the result, `cairn ctl plan apply` delivers its plans,
//! and `cairn plan simulate` runs it offline against a saved dump.

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::view::ClusterView;
use cairn_inventory::{DbName, PlanOrigin, SiteId};
use cairn_transport::{PlanPreview, PlanRequest, PlannedMove, SitePlan};

use super::repair::{RepairKinds, repair};
use super::reshape::{Move, plans_for, reshape};
use super::{OPERATOR_PRIORITY, candidates};

/// What `request` would do in `view`, as planned by site `via`; `Err` names what is
/// wrong with the request.
pub fn preview(view: &ClusterView, request: &PlanRequest, via: SiteId) -> Result<PlanPreview, String> {
    let candidates = candidates(view);
    let origin = PlanOrigin::Operator { via };
    match request {
        PlanRequest::Rebalance => {
            let reshaped = reshape(view, &candidates, &BTreeSet::new());
            Ok(finish(view, reshaped.moves, reshaped.stuck, "rebalance", origin))
        }
        PlanRequest::Decommission { site } => {
            if view.site(*site).is_none() {
                return Err(format!("no site {} in the cluster view", site.short()));
            }
            let reshaped = reshape(view, &candidates, &BTreeSet::from([*site]));
            Ok(finish(view, reshaped.moves, reshaped.stuck, "decommission", origin))
        }
        PlanRequest::Move { db, shard, from, to } => {
            let m = check_move(view, &candidates, db, *shard, *from, *to)?;
            Ok(finish(view, vec![m], BTreeMap::new(), "move", origin))
        }
        PlanRequest::Repair => {
            let kinds = RepairKinds { recover: true, trim: true };
            let fixed = repair(view, &candidates, &BTreeSet::new(), kinds);
            let plans = super::repair::plans_for(&fixed, "repair", origin, OPERATOR_PRIORITY);
            Ok(PlanPreview { moves: Vec::new(), stuck: Vec::new(), plans: site_plans(view, plans) })
        }
    }
}

/// The one move an operator asked for, if it is allowed.
fn check_move(
    view: &ClusterView,
    candidates: &[super::Candidate],
    db: &DbName,
    shard: u32,
    from: SiteId,
    to: SiteId,
) -> Result<Move, String> {
    let Some(d) = view.db(db) else { return Err(format!("no db {db} in the cluster view")) };
    let Some(placement) = d.placement.get(shard as usize) else {
        return Err(format!("db {db} has {} shards; there is no shard {shard}", d.shards()));
    };
    let Some(held) = placement.replicas.iter().find(|r| r.site_id == from) else {
        return Err(format!("{} holds no replica of {db}/{shard}", from.short()));
    };
    if !held.is_ready() {
        return Err(format!("the replica of {db}/{shard} on {} is {}, not ready", from.short(), held.state));
    }
    if placement.replicas.iter().any(|r| r.site_id == to) {
        return Err(format!("{} already holds a replica of {db}/{shard}", to.short()));
    }
    // The new replica copies from the shard's ready replicas on live sites: with none,
    // it would be ready at once, and empty.
    if !placement.replicas.iter().any(|r| r.is_ready() && view.is_live(r.site_id)) {
        return Err(format!(
            "no live site holds a ready replica of {db}/{shard} to copy from; bring {} back, or repair once \
             it is given up",
            from.short()
        ));
    }
    match candidates.iter().find(|c| c.site == to) {
        None => Err(format!("{} is not a live core site", to.short())),
        Some(c) if c.draining => Err(format!("{} is draining", to.short())),
        Some(_) => Ok(Move { db: db.clone(), shard, from, to, bytes: held.bytes }),
    }
}

/// Plans per db and site, each with where to deliver it.
fn site_plans(view: &ClusterView, plans: BTreeMap<DbName, super::SitePlans>) -> Vec<SitePlan> {
    plans
        .into_values()
        .flatten()
        .map(|(site, plan)| SitePlan {
            site,
            addr: view.site(site).map(|s| s.addr.clone()).unwrap_or_default(),
            plan,
        })
        .collect()
}

/// A preview of `moves`: their plans, with where to deliver them.
fn finish(
    view: &ClusterView,
    moves: Vec<Move>,
    stuck: BTreeMap<SiteId, u64>,
    kind: &str,
    origin: PlanOrigin,
) -> PlanPreview {
    let plans = site_plans(view, plans_for(view, &moves, kind, origin, OPERATOR_PRIORITY));
    let moves = moves
        .into_iter()
        .map(|m| PlannedMove { db: m.db, shard: m.shard, from: m.from, to: m.to, bytes: m.bytes })
        .collect();
    PlanPreview { moves, stuck: stuck.into_iter().collect(), plans }
}
