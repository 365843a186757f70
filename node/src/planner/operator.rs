//! Operator requests: a [`PlanRequest`] and a view in, a [`PlanPreview`] out (the moves,
//! what is stuck, and the plans with where to deliver them). Pure, like every planner:
//! `cairn ctl plan preview` shows the result, `cairn ctl plan apply` delivers its plans,
//! and `cairn plan simulate` runs it offline against a saved dump.

use std::collections::BTreeSet;

use cairn_gossip::view::ClusterView;
use cairn_inventory::{PlanOrigin, SiteId};
use cairn_transport::{PlanPreview, PlanRequest, PlannedMove, SitePlan};

use super::reshape::{plans_for, reshape};
use super::{OPERATOR_PRIORITY, candidates};

/// What `request` would do in `view`, as planned by site `via`; `Err` names what is
/// wrong with the request.
pub fn preview(view: &ClusterView, request: &PlanRequest, via: SiteId) -> Result<PlanPreview, String> {
    let candidates = candidates(view);
    let (kind, leaving) = match request {
        PlanRequest::Rebalance => ("rebalance", BTreeSet::new()),
        PlanRequest::Decommission { site } => {
            if view.site(*site).is_none() {
                return Err(format!("no site {} in the cluster view", site.short()));
            }
            ("decommission", BTreeSet::from([*site]))
        }
    };
    let reshaped = reshape(view, &candidates, &leaving);
    let origin = PlanOrigin::Operator { via };
    let plans = plans_for(view, &reshaped.moves, kind, origin, OPERATOR_PRIORITY)
        .into_values()
        .flatten()
        .map(|(site, plan)| SitePlan {
            site,
            addr: view.site(site).map(|s| s.addr.clone()).unwrap_or_default(),
            plan,
        })
        .collect();
    let moves = reshaped
        .moves
        .into_iter()
        .map(|m| PlannedMove { db: m.db, shard: m.shard, from: m.from, to: m.to, bytes: m.bytes })
        .collect();
    Ok(PlanPreview { moves, stuck: reshaped.stuck.into_iter().collect(), plans })
}
