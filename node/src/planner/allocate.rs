//! `allocate`: place every shard of a new db on distinct live core sites.
//!
//! For each shard in turn, each replica goes to the site that, among those not yet
//! holding this shard, (1) adds a zone this shard does not have yet, then (2) has the
//! lowest load per unit of capacity (counting every db and the replicas placed so far),
//! then (3) wins a tie-break hashed from (db, shard, site), so ties do not always favour
//! the same sites. With equal capacities and one zone, replica counts end within ±1 of
//! each other when they started that way. A shard gets fewer replicas than the
//! replication factor only when there are fewer live core sites.

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::view::DbView;
use cairn_inventory::{Plan, PlanOrigin, SiteId, Step};

use super::{AUTOMATIC_PRIORITY, Candidate, SitePlans, best_new_holder, plan_id};

/// Where each shard's replicas go: shard index → sites.
pub type Placement = Vec<Vec<SiteId>>;

/// Chooses sites for every shard of `db`.
pub fn place(db: &DbView, candidates: &[Candidate]) -> Placement {
    let mut sites: Vec<&Candidate> = candidates.iter().collect();
    sites.sort_by_key(|c| c.site);
    sites.dedup_by_key(|c| c.site);
    let mut load: BTreeMap<SiteId, u64> = sites.iter().map(|c| (c.site, c.load)).collect();
    let mut placement = Vec::with_capacity(db.shards() as usize);
    for shard in 0..db.shards() {
        let mut chosen: Vec<SiteId> = Vec::new();
        let mut zones: BTreeSet<&str> = BTreeSet::new();
        for _ in 0..db.replication() {
            let key: [&[u8]; 2] = [db.name.as_str().as_bytes(), &shard.to_be_bytes()];
            let best = best_new_holder(sites.iter().copied(), &load, &chosen, &zones, &key);
            let Some(best) = best else { break };
            chosen.push(best.site);
            zones.insert(best.zone.as_str());
            *load.get_mut(&best.site).expect("every candidate has a load") += 1;
        }
        placement.push(chosen);
    }
    placement
}

/// The shards of `db` with no replica on any site in the view (every shard of a new db).
pub fn missing_shards(db: &DbView) -> Vec<u32> {
    (0..db.shards()).filter(|s| db.placement.get(*s as usize).is_none_or(|p| p.replicas.is_empty())).collect()
}

/// The allocation plans for `db`'s shards that no site holds ([`missing_shards`]: every
/// shard of a new db; those an allocation left out, when the site given them never took
/// its part): for each site, `add_replica` of its shards (no upstreams: such a shard
/// holds no data). Made by `planner`; the plan id depends only on the db's identity, the
/// shards and the placement, so every planner of the same view agrees.
pub fn allocate(db: &DbView, candidates: &[Candidate], planner: SiteId) -> SitePlans {
    let placement = place(db, candidates);
    let missing = missing_shards(db);
    let mut fingerprint = Vec::new();
    for sites in &placement {
        for site in sites {
            fingerprint.extend_from_slice(&site.0.to_be_bytes());
        }
    }
    // A whole db's allocation keeps the id it always had; a partial one names its shards.
    let partial: Vec<u8> = if missing.len() == db.shards() as usize {
        Vec::new()
    } else {
        missing.iter().flat_map(|s| s.to_be_bytes()).collect()
    };
    let id = plan_id(&[
        b"allocate",
        db.name.as_str().as_bytes(),
        &db.created.wall_ms.to_be_bytes(),
        &db.created.logical.to_be_bytes(),
        &db.origin.0.to_be_bytes(),
        &fingerprint,
        &partial,
    ]);
    let mut steps: BTreeMap<SiteId, Vec<Step>> = BTreeMap::new();
    for (shard, sites) in placement.iter().enumerate().filter(|(s, _)| missing.contains(&(*s as u32))) {
        for site in sites {
            steps
                .entry(*site)
                .or_default()
                .push(Step::AddReplica { shard: shard as u32, upstreams: Vec::new() });
        }
    }
    steps
        .into_iter()
        .map(|(site, steps)| {
            let plan = Plan {
                db: db.name.clone(),
                plan_id: id,
                priority: AUTOMATIC_PRIORITY,
                origin: PlanOrigin::Automatic { planner },
                steps,
            };
            (site, plan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_inventory::{DbName, Hlc, Retention};
    use proptest::prelude::*;

    use super::*;

    fn db(shards: u32, replication: u32) -> DbView {
        DbView {
            seal: None,
            name: DbName::new("orders").unwrap(),
            settings: cairn_inventory::DbSettings::new(shards, replication, Retention::default()).unwrap(),
            created: Hlc { wall_ms: 5, logical: 0 },
            origin: SiteId(1),
            changed: Hlc { wall_ms: 5, logical: 0 },
            supersedes: None,
            placement: Vec::new(),
        }
    }

    fn cluster() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((1..4u8, 1..4u32, 0..20u64), 1..12).prop_map(|sites| {
            sites
                .into_iter()
                .enumerate()
                .map(|(i, (zone, capacity, load))| Candidate {
                    site: SiteId(i as u128 * 7919 + 1),
                    zone: format!("z{zone}"),
                    capacity,
                    load,
                    draining: false,
                })
                .collect()
        })
    }

    fn counts(placement: &Placement) -> BTreeMap<SiteId, u64> {
        let mut counts = BTreeMap::new();
        for site in placement.iter().flatten() {
            *counts.entry(*site).or_default() += 1;
        }
        counts
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn distinct_sites_and_as_many_zones_as_possible(sites in cluster(), shards in 1..64u32, r in 1..6u32) {
            let placement = place(&db(shards, r), &sites);
            let zones: BTreeSet<&str> = sites.iter().map(|c| c.zone.as_str()).collect();
            for chosen in &placement {
                let distinct: BTreeSet<_> = chosen.iter().collect();
                prop_assert_eq!(distinct.len(), chosen.len(), "a site twice in one shard");
                prop_assert_eq!(chosen.len(), (r as usize).min(sites.len()));
                let used: BTreeSet<&str> = chosen
                    .iter()
                    .map(|s| sites.iter().find(|c| c.site == *s).unwrap().zone.as_str())
                    .collect();
                prop_assert_eq!(used.len(), (r as usize).min(zones.len()));
            }
        }

        #[test]
        fn equal_sites_stay_balanced_within_one(n in 1..20usize, load in 0..5u64, shards in 1..128u32, r in 1..4u32) {
            let sites: Vec<Candidate> = (0..n)
                .map(|i| Candidate { site: SiteId(i as u128 + 1), zone: String::new(), capacity: 1, load, draining: false })
                .collect();
            let placement = place(&db(shards, r), &sites);
            let counts = counts(&placement);
            let all: Vec<u64> = sites.iter().map(|c| counts.get(&c.site).copied().unwrap_or(0)).collect();
            prop_assert!(all.iter().max().unwrap() - all.iter().min().unwrap() <= 1, "{all:?}");
        }

        #[test]
        fn new_replicas_go_to_the_least_loaded(sites in cluster(), shards in 1..64u32) {
            // One zone, equal capacity: the spread of loads never grows past max(1, before).
            let sites: Vec<Candidate> =
                sites.into_iter().map(|c| Candidate { zone: String::new(), capacity: 1, ..c }).collect();
            let before: Vec<u64> = sites.iter().map(|c| c.load).collect();
            let spread_before = before.iter().max().unwrap() - before.iter().min().unwrap();
            let counts = counts(&place(&db(shards, 1), &sites));
            let after: Vec<u64> = sites.iter().map(|c| c.load + counts.get(&c.site).copied().unwrap_or(0)).collect();
            let spread_after = after.iter().max().unwrap() - after.iter().min().unwrap();
            prop_assert!(spread_after <= spread_before.max(1), "{before:?} → {after:?}");
        }

        #[test]
        fn more_capacity_never_gets_fewer_replicas(caps in prop::collection::vec(1..5u32, 2..8), shards in 1..100u32) {
            let sites: Vec<Candidate> = caps
                .iter()
                .enumerate()
                .map(|(i, cap)| Candidate { site: SiteId(i as u128 + 1), zone: String::new(), capacity: *cap, load: 0, draining: false })
                .collect();
            let counts = counts(&place(&db(shards, 1), &sites));
            for a in &sites {
                for b in &sites {
                    let (ca, cb) = (counts.get(&a.site).copied().unwrap_or(0), counts.get(&b.site).copied().unwrap_or(0));
                    if a.capacity > b.capacity {
                        prop_assert!(ca + 1 >= cb, "capacity {} got {ca}, capacity {} got {cb}", a.capacity, b.capacity);
                    }
                }
            }
        }

        #[test]
        fn the_same_view_gives_the_same_plans_in_any_order(sites in cluster(), shards in 1..32u32, r in 1..4u32, rot in 0..12usize) {
            let mut rotated = sites.clone();
            let len = rotated.len();
            rotated.rotate_left(rot % len);
            let a = allocate(&db(shards, r), &sites, SiteId(9));
            let b = allocate(&db(shards, r), &rotated, SiteId(9));
            prop_assert_eq!(&a, &b);
            // Every plan of one allocation shares one id, and adds each shard exactly r times.
            let ids: BTreeSet<_> = a.values().map(|p| p.plan_id).collect();
            prop_assert_eq!(ids.len(), 1);
            let adds: usize = a.values().map(|p| p.steps.len()).sum();
            prop_assert_eq!(adds, shards as usize * (r as usize).min(sites.len()));
        }
    }

    #[test]
    fn another_db_or_placement_gets_another_plan_id() {
        let sites: Vec<Candidate> = (1..=3)
            .map(|i| Candidate {
                site: SiteId(i),
                zone: String::new(),
                capacity: 1,
                load: 0,
                draining: false,
            })
            .collect();
        let id = |d: &DbView, s: &[Candidate]| allocate(d, s, SiteId(1)).values().next().unwrap().plan_id;
        let base = id(&db(4, 2), &sites);
        let mut other = db(4, 2);
        other.name = DbName::new("other").unwrap();
        assert_ne!(base, id(&other, &sites));
        assert_ne!(base, id(&db(4, 2), &sites[..2]));
        assert_eq!(base, id(&db(4, 2), &sites), "deterministic");
    }
}
