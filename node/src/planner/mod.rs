//! Planners: pure functions from a cluster view and a request to a plan per site.
//!
//! No I/O and no clock: the same view and request always give the same plans with the
//! same plan id, on any site, so two sites that plan the same change at once agree.
//! `allocate` places a new db; `reshape` moves replicas (rebalance, decommission);
//! `repair` recovers shards of lost sites and trims extras; `operator` turns an
//! operator's request into a preview with its plans; `check` says whether plans are
//! safe for the view they were made from; `import` picks out of a view the records
//! that belong to one site (`cairn import`).

pub mod allocate;
pub mod check;
pub mod import;
pub mod operator;
pub mod repair;
pub mod reshape;

use std::collections::BTreeMap;

use cairn_gossip::SiteState;
use cairn_gossip::view::ClusterView;
use cairn_inventory::{PlanId, Role, SiteId};

/// The plans a planner produced, by site.
pub type SitePlans = BTreeMap<SiteId, cairn_inventory::Plan>;

/// Priority of plans made by automation; operator plans use [`OPERATOR_PRIORITY`].
pub const AUTOMATIC_PRIORITY: u32 = 10;
/// Priority of plans an operator asked for: they replace automatic ones.
pub const OPERATOR_PRIORITY: u32 = 100;

/// A live core site that can take replicas, as planners see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The site.
    pub site: SiteId,
    /// Its failure-domain label (sites without one share the empty label).
    pub zone: String,
    /// Its placement weight (≥ 1).
    pub capacity: u32,
    /// Replicas it holds now, over all dbs.
    pub load: u64,
    /// Being decommissioned: takes no new replicas, gives its own away.
    pub draining: bool,
}

/// The live core sites of a view, by site id, with their loads (draining ones included:
/// they hold replicas that planners move; [`best_new_holder`] never picks them).
pub fn candidates(view: &ClusterView) -> Vec<Candidate> {
    let mut load: BTreeMap<SiteId, u64> = BTreeMap::new();
    for shard in view.dbs.iter().flat_map(|d| &d.placement) {
        for replica in &shard.replicas {
            *load.entry(replica.site_id).or_default() += 1;
        }
    }
    view.sites
        .iter()
        .filter(|s| s.state == SiteState::Live && s.role == Role::Core)
        .map(|s| Candidate {
            site: s.site_id,
            zone: s.zone.clone().unwrap_or_default(),
            capacity: s.capacity.max(1),
            load: load.get(&s.site_id).copied().unwrap_or(0),
            draining: s.draining,
        })
        .collect()
}

/// The best new holder of one shard among `sites`, skipping those in `holding` and
/// draining ones: one
/// that adds a zone the shard lacks (`zones`), then the lowest load per unit of
/// capacity, then the larger capacity, then a tie-break hashed from `key` and the site,
/// so ties do not always favour the same sites.
pub fn best_new_holder<'a>(
    sites: impl IntoIterator<Item = &'a Candidate>,
    load: &BTreeMap<SiteId, u64>,
    holding: &[SiteId],
    zones: &std::collections::BTreeSet<&str>,
    key: &[&[u8]],
) -> Option<&'a Candidate> {
    let rank = |c: &Candidate| {
        let mut parts = key.to_vec();
        let site = c.site.0.to_be_bytes();
        parts.push(&site);
        (
            zones.contains(c.zone.as_str()),
            load.get(&c.site).copied().unwrap_or(0),
            c.capacity,
            stable_hash(&parts),
        )
    };
    sites.into_iter().filter(|c| !holding.contains(&c.site) && !c.draining).min_by(|a, b| {
        let (ka, kb) = (rank(a), rank(b));
        // Load per capacity without division: la/ca vs lb/cb.
        ka.0.cmp(&kb.0)
            .then((u128::from(ka.1) * u128::from(kb.2)).cmp(&(u128::from(kb.1) * u128::from(ka.2))))
            .then(kb.2.cmp(&ka.2))
            .then(ka.3.cmp(&kb.3))
    })
}

/// A stable 128-bit hash (FNV-1a, two lanes) of some byte strings: the same on every
/// platform and release, unlike `std`'s hashers, so plan ids can be compared anywhere.
pub fn stable_hash(parts: &[&[u8]]) -> u128 {
    let lane = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for part in parts {
            for byte in part.iter().chain(&(part.len() as u64).to_le_bytes()) {
                h ^= u64::from(*byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    };
    (u128::from(lane(0)) << 64) | u128::from(lane(0x9e37_79b9_7f4a_7c15))
}

/// Gives `plans` ids that also name what they were made from (`salt`: an automatic
/// planner's process generation and epoch, an operator request's time), so the same
/// change made again later is a new plan, not one a site already ran and would answer
/// `AlreadyEnded`. Every site's plan of one change keeps one id (the same old id and salt
/// give the same new one).
pub fn made_from<'p>(plans: impl IntoIterator<Item = &'p mut cairn_inventory::Plan>, salt: &[u8]) {
    for plan in plans {
        plan.plan_id = plan_id(&[&plan.plan_id.0.to_be_bytes(), salt]);
    }
}

/// A plan id from the words and values that determine a plan.
pub fn plan_id(parts: &[&[u8]]) -> PlanId {
    PlanId(stable_hash(parts))
}
