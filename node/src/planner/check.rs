//! Whether plans are safe for the view they were made from: the last line of defence
//! between a planner (or a view a peer poisoned) and the sites that will run the plans.
//! Automation checks every change before it delivers one; [`workout`] runs every
//! planner on a view and checks what each returns (the property tests and the
//! `planners` fuzz target feed it arbitrary views).
//!
//! A change (plans by db and site) is safe when, for each db it names:
//! - the db is in the view, and every step names one of its shards;
//! - an `add_replica` goes to a live core site that is not draining, holds no replica of
//!   the shard and gets it once; its upstreams are live sites holding a complete
//!   (ready or handing-over) replica — and only a shard no one holds yet (allocation)
//!   may be added without upstreams, since that replica is ready, empty, at once;
//! - a `handover_replica` leaves a site that holds the shard, for another site that
//!   holds a complete replica of it or gets one in this same change (the handover then
//!   waits for it), so no move leaves a shard without a copy;
//! - no plan removes a replica unconditionally (`remove_replica` is for operators who
//!   know a copy is lost, never for a planner).

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use cairn_gossip::view::{ClusterView, DbView};
use cairn_inventory::{DbName, Role, SiteId, Step};
use cairn_transport::{PlanPreview, PlanRequest};

use super::SitePlans;
use crate::automation::{AutomationConfig, dbs_to_allocate, next_change};

/// Runs every planner on `view` as site `me` would — allocation of each new db,
/// automation's next change (repair and rebalance, each on and off, with `lost` given
/// up on), and every operator request (rebalance, repair, each decommission, moves of
/// the first shards' replicas) — and checks the view is whole and every plan safe. The
/// first problem is the error.
pub fn workout(view: &ClusterView, me: SiteId, lost: &BTreeSet<SiteId>) -> Result<(), String> {
    view.check()?;
    let candidates = super::candidates(view);
    for db in dbs_to_allocate(view) {
        let plans = super::allocate::allocate(db, &candidates, me);
        check_change(view, &BTreeMap::from([(db.name.clone(), plans)]))
            .map_err(|e| format!("allocate: {e}"))?;
    }
    for (repair, rebalance) in [(true, true), (true, false), (false, true)] {
        let config = AutomationConfig {
            every: Duration::from_millis(100),
            lost_after: Duration::ZERO,
            repair,
            rebalance,
        };
        if let Some(change) = next_change(view, me, lost, &config) {
            check_change(view, &change.plans).map_err(|e| format!("automation's {}: {e}", change.kind))?;
        }
    }
    let mut requests = vec![PlanRequest::Rebalance, PlanRequest::Repair];
    requests.extend(view.sites.iter().map(|s| PlanRequest::Decommission { site: s.site_id }));
    for db in &view.dbs {
        for shard in db.placement.iter().take(3) {
            for from in &shard.replicas {
                for to in view.sites.iter().take(4) {
                    requests.push(PlanRequest::Move {
                        db: db.name.clone(),
                        shard: shard.shard,
                        from: from.site_id,
                        to: to.site_id,
                    });
                }
            }
        }
    }
    for request in &requests {
        if let Ok(preview) = super::operator::preview(view, request, me) {
            check_change(view, &grouped(&preview)).map_err(|e| format!("{request:?}: {e}"))?;
        }
    }
    Ok(())
}

/// An operator preview's plans by db and site, as automation holds its changes.
pub fn grouped(preview: &PlanPreview) -> BTreeMap<DbName, SitePlans> {
    let mut out: BTreeMap<DbName, SitePlans> = BTreeMap::new();
    for p in &preview.plans {
        out.entry(p.plan.db.clone()).or_default().insert(p.site, p.plan.clone());
    }
    out
}

/// The first reason the change is unsafe, if any.
pub fn check_change(view: &ClusterView, change: &BTreeMap<DbName, SitePlans>) -> Result<(), String> {
    for (name, plans) in change {
        let Some(db) = view.db(name) else {
            return Err(format!("a plan for db {name}, which the view does not hold"));
        };
        check_db(view, db, plans)?;
    }
    Ok(())
}

fn check_db(view: &ClusterView, db: &DbView, plans: &SitePlans) -> Result<(), String> {
    let name = &db.name;
    let mut added: BTreeSet<(u32, SiteId)> = BTreeSet::new();
    for (site, plan) in plans {
        if &plan.db != name {
            return Err(format!("the plan for {} filed under db {name} is for db {}", site.short(), plan.db));
        }
        for step in &plan.steps {
            let (Step::AddReplica { shard, .. }
            | Step::HandoverReplica { shard, .. }
            | Step::RemoveReplica { shard }) = step;
            if !db.settings.shards.contains(*shard) {
                return Err(format!("a step for {name}/{shard}: the db has {} shards", db.shards()));
            }
            if let Step::AddReplica { shard, upstreams } = step {
                check_add(view, db, *site, *shard, upstreams)?;
                if !added.insert((*shard, *site)) {
                    return Err(format!("{name}/{shard} added to {} twice", site.short()));
                }
            }
        }
    }
    for (site, plan) in plans {
        for step in &plan.steps {
            match step {
                Step::AddReplica { .. } => {}
                Step::RemoveReplica { shard } => {
                    return Err(format!(
                        "a planner removes {name}/{shard} from {} unconditionally",
                        site.short()
                    ));
                }
                Step::HandoverReplica { shard, to } => {
                    let replicas = view.replicas(name, *shard);
                    if !replicas.iter().any(|r| r.site_id == *site) {
                        return Err(format!(
                            "{} hands over {name}/{shard}, which it does not hold",
                            site.short()
                        ));
                    }
                    if to == site {
                        return Err(format!("{} hands {name}/{shard} over to itself", site.short()));
                    }
                    let target_holds = replicas.iter().any(|r| r.site_id == *to && r.is_complete());
                    if !target_holds && !added.contains(&(*shard, *to)) {
                        return Err(format!(
                            "{} hands {name}/{shard} over to {}, which neither holds it nor gets it",
                            site.short(),
                            to.short()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_add(
    view: &ClusterView,
    db: &DbView,
    site: SiteId,
    shard: u32,
    upstreams: &[SiteId],
) -> Result<(), String> {
    let name = &db.name;
    let Some(s) = view.site(site) else {
        return Err(format!("{name}/{shard} added to {}, which is not in the view", site.short()));
    };
    if !view.is_live(site) || s.role != Role::Core || s.draining {
        return Err(format!(
            "{name}/{shard} added to {}, which is not a live core site taking replicas",
            site.short()
        ));
    }
    let replicas = view.replicas(name, shard);
    if replicas.iter().any(|r| r.site_id == site) {
        return Err(format!("{name}/{shard} added to {}, which already holds it", site.short()));
    }
    if upstreams.is_empty() && !replicas.is_empty() {
        return Err(format!(
            "{name}/{shard} added to {} with no upstream, though {} sites hold it: it would be ready and empty",
            site.short(),
            replicas.len()
        ));
    }
    for upstream in upstreams {
        let complete = replicas.iter().any(|r| r.site_id == *upstream && r.is_complete());
        if *upstream == site || !view.is_live(*upstream) || !complete {
            return Err(format!(
                "{name}/{shard} added to {} from {}, which holds no complete replica on a live site",
                site.short(),
                upstream.short()
            ));
        }
    }
    Ok(())
}
