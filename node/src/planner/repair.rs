//! `recover` and `trim`: bring every shard back to its replication factor.
//!
//! A shard's copies are its replicas on sites that are not lost; `lost` sites (dead for
//! longer than the cluster's patience, or declared lost by an operator) count for
//! nothing. **Recover**: a shard with fewer copies than its replication factor gets new
//! replicas on live core sites (a new zone first, then the least loaded per capacity),
//! each catching up from the shard's ready replicas on live sites. A shard with no such
//! replica cannot be recovered and is reported lost — never silently dropped. **Trim**:
//! a shard with more ready replicas on live sites than its factor (a site thought lost
//! came back) gives up the extras by `handover_replica` to a remaining ready holder, so
//! a copy leaves only once another holds everything it held; the extras are taken from
//! the most loaded sites, keeping as many zones as possible. Trim never goes below the
//! factor and only counts ready replicas on live sites, so it never removes the last
//! copy of anything.
//!
//! Dbs with a plan in flight are left alone; shards with replicas still catching up
//! count those as copies (they are on their way).

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::view::{ClusterView, DbView, ShardView};
use cairn_inventory::{DbName, Plan, PlanOrigin, SiteId, Step};

use super::{Candidate, SitePlans, best_new_holder, plan_id};

/// What a repair decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// New replicas: (db, shard, site, upstreams).
    pub adds: Vec<(DbName, u32, SiteId, Vec<SiteId>)>,
    /// Extra replicas leaving: (db, shard, site, handing over to).
    pub trims: Vec<(DbName, u32, SiteId, SiteId)>,
    /// Shards with no complete replica on a live site.
    pub lost: Vec<(DbName, u32)>,
    /// Shards still short after recovery because too few live core sites exist.
    pub short: Vec<(DbName, u32)>,
}

/// Which halves to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairKinds {
    /// Add replicas to shards below their factor.
    pub recover: bool,
    /// Remove extra replicas from shards above it.
    pub trim: bool,
}

/// Plans recovery and/or trimming for every db without a plan in flight.
pub fn repair(
    view: &ClusterView,
    candidates: &[Candidate],
    lost: &BTreeSet<SiteId>,
    kinds: RepairKinds,
) -> Repair {
    let busy: BTreeSet<&DbName> = view.plans.iter().map(|p| &p.db).collect();
    let mut load: BTreeMap<SiteId, u64> = candidates.iter().map(|c| (c.site, c.load)).collect();
    let mut out = Repair::default();
    for db in view.dbs.iter().filter(|d| !busy.contains(&d.name)) {
        for shard in &db.placement {
            if shard.replicas.is_empty() {
                continue; // not allocated yet: allocate's job
            }
            let sources: Vec<SiteId> = sorted(
                shard
                    .replicas
                    .iter()
                    .filter(|r| r.is_complete() && view.is_live(r.site_id))
                    .map(|r| r.site_id),
            );
            if sources.is_empty() {
                out.lost.push((db.name.clone(), shard.shard));
                continue;
            }
            let kept: Vec<SiteId> = sorted(
                shard
                    .replicas
                    .iter()
                    .filter(|r| !r.is_handing_over() && !lost.contains(&r.site_id))
                    .map(|r| r.site_id),
            );
            let factor = db.replication() as usize;
            if kinds.recover && kept.len() < factor {
                recover_shard(db, shard, candidates, &mut load, &kept, &sources, factor, &mut out);
            } else if kinds.trim {
                trim_shard(view, db, shard, candidates, &mut load, factor, &mut out);
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn recover_shard(
    db: &DbView,
    shard: &ShardView,
    candidates: &[Candidate],
    load: &mut BTreeMap<SiteId, u64>,
    kept: &[SiteId],
    sources: &[SiteId],
    factor: usize,
    out: &mut Repair,
) {
    // Every site with any replica of the shard (even a lost one) is out: a lost site
    // that comes back still holds its copy.
    let mut holding: Vec<SiteId> = shard.replicas.iter().map(|r| r.site_id).collect();
    let zone_of = |s: &SiteId| candidates.iter().find(|c| c.site == *s).map(|c| c.zone.as_str());
    let mut zones: BTreeSet<&str> = kept.iter().filter_map(zone_of).collect();
    let key: [&[u8]; 3] = [b"recover", db.name.as_str().as_bytes(), &shard.shard.to_be_bytes()];
    for _ in kept.len()..factor {
        let Some(best) = best_new_holder(candidates, load, &holding, &zones, &key) else {
            out.short.push((db.name.clone(), shard.shard));
            return;
        };
        holding.push(best.site);
        zones.insert(best.zone.as_str());
        *load.entry(best.site).or_default() += 1;
        out.adds.push((db.name.clone(), shard.shard, best.site, sources.to_vec()));
    }
}

fn trim_shard(
    view: &ClusterView,
    db: &DbView,
    shard: &ShardView,
    candidates: &[Candidate],
    load: &mut BTreeMap<SiteId, u64>,
    factor: usize,
    out: &mut Repair,
) {
    let mut ready: Vec<SiteId> =
        sorted(shard.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).map(|r| r.site_id));
    let zone_of = |s: &SiteId| candidates.iter().find(|c| c.site == *s).map_or("", |c| c.zone.as_str());
    let mut victims = Vec::new();
    while ready.len() > factor {
        // The extra whose zone another holder shares (so no zone is lost), then the
        // most loaded, then the highest id.
        let victim = *ready
            .iter()
            .max_by_key(|s| {
                let shared = ready.iter().filter(|o| o != s && zone_of(o) == zone_of(s)).count() > 0;
                (shared, load.get(s).copied().unwrap_or(0), **s)
            })
            .expect("more than `factor` ready replicas");
        ready.retain(|s| *s != victim);
        if let Some(l) = load.get_mut(&victim) {
            *l = l.saturating_sub(1);
        }
        victims.push(victim);
    }
    // Each extra is handed over to a replica that stays — never to another extra, which
    // may be gone by the time the handover completes (the simulation found one leaving
    // for a site that had itself just handed the shard on).
    for (i, victim) in victims.into_iter().enumerate() {
        out.trims.push((db.name.clone(), shard.shard, victim, ready[i % ready.len()]));
    }
}

fn sorted(sites: impl Iterator<Item = SiteId>) -> Vec<SiteId> {
    let mut v: Vec<SiteId> = sites.collect();
    v.sort();
    v.dedup();
    v
}

/// The plans that carry out a repair, per db and site. The plan id depends only on
/// `kind` and the repair's steps, so every planner of the same view agrees.
pub fn plans_for(
    repair: &Repair,
    kind: &str,
    origin: PlanOrigin,
    priority: u32,
) -> BTreeMap<DbName, SitePlans> {
    let mut steps: BTreeMap<DbName, BTreeMap<SiteId, Vec<Step>>> = BTreeMap::new();
    for (db, shard, site, upstreams) in &repair.adds {
        let step = Step::AddReplica { shard: *shard, upstreams: upstreams.clone() };
        steps.entry(db.clone()).or_default().entry(*site).or_default().push(step);
    }
    for (db, shard, site, to) in &repair.trims {
        let step = Step::HandoverReplica { shard: *shard, to: *to };
        steps.entry(db.clone()).or_default().entry(*site).or_default().push(step);
    }
    steps
        .into_iter()
        .map(|(db, by_site)| {
            let mut fingerprint = Vec::new();
            for (site, steps) in &by_site {
                fingerprint.extend_from_slice(&site.0.to_be_bytes());
                for step in steps {
                    match step {
                        Step::AddReplica { shard, upstreams } => {
                            fingerprint.push(b'a');
                            fingerprint.extend_from_slice(&shard.to_be_bytes());
                            for u in upstreams {
                                fingerprint.extend_from_slice(&u.0.to_be_bytes());
                            }
                        }
                        Step::HandoverReplica { shard, to } => {
                            fingerprint.push(b'h');
                            fingerprint.extend_from_slice(&shard.to_be_bytes());
                            fingerprint.extend_from_slice(&to.0.to_be_bytes());
                        }
                        Step::RemoveReplica { shard } => {
                            fingerprint.push(b'r');
                            fingerprint.extend_from_slice(&shard.to_be_bytes());
                        }
                    }
                }
            }
            let id = plan_id(&[kind.as_bytes(), db.as_str().as_bytes(), &fingerprint]);
            let plans = by_site
                .into_iter()
                .map(|(site, steps)| (site, Plan { db: db.clone(), plan_id: id, priority, origin, steps }))
                .collect();
            (db, plans)
        })
        .collect()
}
