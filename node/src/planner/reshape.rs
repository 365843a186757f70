//! `rebalance` and `decommission`: move replicas between live core sites.
//!
//! Both work out a target replica count per site over all dbs — counts proportional to
//! capacity, rounded so that with equal capacities every site ends within ±1 (the
//! leftover replicas go to the sites that hold the most already, so fewer replicas move)
//! — and a decommissioned site's target is 0. Then, while a site holds more than its
//! target and another less, one replica moves from the first to the second (from a
//! decommissioned site first, so balancing moves never take the last site that could
//! receive one of its shards): each move
//! takes away exactly one excess replica, so the number of moves is the least that
//! reaches the targets. A move never puts two replicas of a shard on one site and never
//! lowers the number of zones a shard spans; among the allowed moves the planner takes
//! the one that adds a zone, then from the most over-target site to the most
//! under-target one, then a tie-break hashed from the move.
//!
//! A move of shard `k` from `s` to `t` is `add_replica k` on `t` (upstreams: the
//! shard's ready holders) and `handover_replica k → t` on `s`, which deletes `s`'s copy
//! only once `t` is ready and covers it. Every site's plan lists its adds before its
//! handovers, so handovers (which wait for other sites' adds) never hold up an add.
//!
//! Only replicas on live core sites move; replicas handing over already are left alone
//! (they are leaving) and not counted; dbs with a plan in flight are left alone, and so
//! are shards with no ready replica on a live site to copy from.

use std::collections::{BTreeMap, BTreeSet};

use cairn_gossip::view::{ClusterView, DbView};
use cairn_inventory::{DbName, Plan, PlanOrigin, SiteId, Step};

use super::{Candidate, SitePlans, plan_id, stable_hash};

/// One replica moving from one site to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    /// The db.
    pub db: DbName,
    /// The shard.
    pub shard: u32,
    /// The site giving the replica up.
    pub from: SiteId,
    /// The site taking it.
    pub to: SiteId,
    /// Payload bytes the replica held (by the view), i.e. what the move copies.
    pub bytes: u64,
}

/// What a reshaping planner decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reshape {
    /// The moves, in the order chosen.
    pub moves: Vec<Move>,
    /// Replicas that should have moved but had nowhere to go (every candidate already
    /// holds their shard), by site.
    pub stuck: BTreeMap<SiteId, u64>,
}

/// A replica as the planner counts it.
#[derive(Debug, Clone)]
struct Held {
    db: DbName,
    shard: u32,
    bytes: u64,
    /// False for a db with a plan in flight: it counts, but does not move.
    movable: bool,
}

/// Where replicas are: per shard the holding sites, per site its movable replicas.
struct Layout<'a> {
    holders: BTreeMap<(DbName, u32), BTreeSet<SiteId>>,
    /// Per shard, sites with a replica handing over, or that gave theirs up in an
    /// earlier move of this reshape: no move may go there.
    leaving: BTreeSet<(DbName, u32, SiteId)>,
    by_site: BTreeMap<SiteId, Vec<Held>>,
    zone: BTreeMap<SiteId, &'a str>,
}

impl<'a> Layout<'a> {
    fn new(view: &ClusterView, candidates: &'a [Candidate]) -> Self {
        let zone: BTreeMap<SiteId, &str> = candidates.iter().map(|c| (c.site, c.zone.as_str())).collect();
        let busy: BTreeSet<&DbName> = view.plans.iter().map(|p| &p.db).collect();
        let mut holders: BTreeMap<(DbName, u32), BTreeSet<SiteId>> = BTreeMap::new();
        let mut leaving = BTreeSet::new();
        let mut by_site: BTreeMap<SiteId, Vec<Held>> = zone.keys().map(|s| (*s, Vec::new())).collect();
        for db in &view.dbs {
            for shard in &db.placement {
                // A move copies from the shard's ready replicas on live sites: a shard
                // with none stays where it is (it counts, but does not move).
                let copyable = shard.replicas.iter().any(|r| r.is_ready() && view.is_live(r.site_id));
                for r in shard.replicas.iter().filter(|r| r.is_handing_over()) {
                    leaving.insert((db.name.clone(), shard.shard, r.site_id));
                }
                for r in shard.replicas.iter().filter(|r| !r.is_handing_over()) {
                    holders.entry((db.name.clone(), shard.shard)).or_default().insert(r.site_id);
                    if let Some(held) = by_site.get_mut(&r.site_id) {
                        // Only ready replicas move: a catching-up one is not a copy yet.
                        let movable = !busy.contains(&db.name) && copyable && r.is_ready();
                        held.push(Held { db: db.name.clone(), shard: shard.shard, bytes: r.bytes, movable });
                    }
                }
            }
        }
        Self { holders, leaving, by_site, zone }
    }

    fn zones_of(&self, key: &(DbName, u32), without: Option<SiteId>, with: Option<SiteId>) -> usize {
        let mut zones: BTreeSet<&str> = BTreeSet::new();
        for site in self.holders.get(key).into_iter().flatten().chain(with.as_ref()) {
            if Some(*site) != without {
                // Sites that are not candidates (dead, replicant) count together as one zone.
                zones.insert(self.zone.get(site).copied().unwrap_or("\u{0}other"));
            }
        }
        zones.len()
    }
}

/// Target replica count per candidate: `total` split in proportion to capacity, the
/// remainder to the sites with the largest fractions, then the largest current counts.
/// Sites in `leaving` get 0.
fn targets(
    candidates: &[Candidate],
    counts: &BTreeMap<SiteId, u64>,
    leaving: &BTreeSet<SiteId>,
) -> BTreeMap<SiteId, u64> {
    let staying: Vec<&Candidate> = candidates.iter().filter(|c| !leaving.contains(&c.site)).collect();
    let total: u64 = counts.values().sum();
    let capacity: u128 = staying.iter().map(|c| u128::from(c.capacity.max(1))).sum();
    let mut out: BTreeMap<SiteId, u64> = candidates.iter().map(|c| (c.site, 0)).collect();
    if capacity == 0 {
        return out;
    }
    let mut fractions = Vec::new();
    let mut given = 0;
    for c in &staying {
        let share = u128::from(total) * u128::from(c.capacity.max(1));
        let base = (share / capacity) as u64;
        out.insert(c.site, base);
        given += base;
        fractions.push((share % capacity, counts.get(&c.site).copied().unwrap_or(0), c.site));
    }
    // Largest fraction first, then most held now (fewer moves), then site id.
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for (_, _, site) in fractions.into_iter().take((total - given) as usize) {
        *out.get_mut(&site).expect("a staying candidate") += 1;
    }
    out
}

/// The moves that bring replica counts to their targets, with `leaving` sites — and
/// draining candidates — emptied.
pub fn reshape(view: &ClusterView, candidates: &[Candidate], leaving: &BTreeSet<SiteId>) -> Reshape {
    let mut leaving = leaving.clone();
    leaving.extend(candidates.iter().filter(|c| c.draining).map(|c| c.site));
    let leaving = &leaving;
    let mut layout = Layout::new(view, candidates);
    let counts: BTreeMap<SiteId, u64> =
        layout.by_site.iter().map(|(site, held)| (*site, held.len() as u64)).collect();
    let targets = targets(candidates, &counts, leaving);
    let mut counts = counts;
    let mut result = Reshape::default();
    loop {
        let over: Vec<SiteId> = counts.iter().filter(|(s, n)| **n > targets[*s]).map(|(s, _)| *s).collect();
        let under: Vec<SiteId> = counts
            .iter()
            .filter(|(s, n)| **n < targets[*s] && !leaving.contains(*s))
            .map(|(s, _)| *s)
            .collect();
        if over.is_empty() {
            break;
        }
        // Leaving sites move first: each shard they hold needs a site that does not hold
        // it yet, and balancing moves of the staying sites would use up those slots.
        let leaving_over: Vec<SiteId> = over.iter().filter(|s| leaving.contains(*s)).copied().collect();
        let mut best = None;
        if !leaving_over.is_empty() {
            // A leaving site must empty even when no under-target site can take what it
            // holds: then any staying site takes it (the least loaded first, and one
            // over its target passes a replica on later) — keeping the shard's zones if
            // possible, else not: the request outranks zone spread.
            let staying: Vec<SiteId> = counts.keys().filter(|s| !leaving.contains(*s)).copied().collect();
            best = best_move(&layout, &counts, &targets, &leaving_over, &under, false)
                .or_else(|| best_move(&layout, &counts, &targets, &leaving_over, &staying, false))
                .or_else(|| best_move(&layout, &counts, &targets, &leaving_over, &staying, true));
        }
        if best.is_none() {
            best = best_move(&layout, &counts, &targets, &over, &under, false);
        }
        let Some((m, i)) = best else {
            for from in over {
                result.stuck.insert(from, counts[&from] - targets[&from]);
            }
            break;
        };
        let mut held = layout.by_site.get_mut(&m.from).expect("a candidate").swap_remove(i);
        // The new replica counts where it goes; it does not move on in this reshape (it
        // is not ready yet), and its shard does not come back to the site it left.
        held.movable = false;
        layout.by_site.get_mut(&m.to).expect("a candidate").push(held);
        layout.leaving.insert((m.db.clone(), m.shard, m.from));
        let holders = layout.holders.get_mut(&(m.db.clone(), m.shard)).expect("a held shard");
        holders.remove(&m.from);
        holders.insert(m.to);
        *counts.get_mut(&m.from).expect("counted") -= 1;
        *counts.get_mut(&m.to).expect("counted") += 1;
        result.moves.push(m);
    }
    result
}

/// The best allowed move from one of `over` to one of `under`, and its index in the
/// giving site's list: from the most over-target site that has one; among its moves, the
/// one that adds a zone to its shard, then goes where there is most room, then wins the
/// tie-break. A move that lowers its shard's zone count is allowed only if
/// `may_lose_zone`.
fn best_move(
    layout: &Layout<'_>,
    counts: &BTreeMap<SiteId, u64>,
    targets: &BTreeMap<SiteId, u64>,
    over: &[SiteId],
    under: &[SiteId],
    may_lose_zone: bool,
) -> Option<(Move, usize)> {
    let mut over = over.to_vec();
    over.sort_by_key(|s| (std::cmp::Reverse(counts[s] - targets[s]), *s));
    let mut best: Option<((bool, i128, u128), Move, usize)> = None;
    for from in &over {
        for (i, held) in layout.by_site[from].iter().enumerate().filter(|(_, h)| h.movable) {
            let key = (held.db.clone(), held.shard);
            let before = layout.zones_of(&key, None, None);
            for to in under {
                if layout.holders[&key].contains(to) || layout.leaving.contains(&(key.0.clone(), key.1, *to))
                {
                    continue;
                }
                let after = layout.zones_of(&key, Some(*from), Some(*to));
                if after < before && !may_lose_zone {
                    continue;
                }
                let room = i128::from(targets[to]) - i128::from(counts[to]);
                let tie = stable_hash(&[
                    held.db.as_str().as_bytes(),
                    &held.shard.to_be_bytes(),
                    &from.0.to_be_bytes(),
                    &to.0.to_be_bytes(),
                ]);
                let rank = (after > before, room, u128::MAX - tie);
                if best.as_ref().is_none_or(|(b, ..)| rank > *b) {
                    let m = Move {
                        db: held.db.clone(),
                        shard: held.shard,
                        from: *from,
                        to: *to,
                        bytes: held.bytes,
                    };
                    best = Some((rank, m, i));
                }
            }
        }
        if best.is_some() {
            break;
        }
    }
    best.map(|(_, m, i)| (m, i))
}

/// The plans that carry out `moves`, per db and site, made by `origin` with `priority`.
/// `kind` names the request (`rebalance`, `decommission`) in the plan id, which depends
/// only on it and the moves, so every planner of the same view agrees.
pub fn plans_for(
    view: &ClusterView,
    moves: &[Move],
    kind: &str,
    origin: PlanOrigin,
    priority: u32,
) -> BTreeMap<DbName, SitePlans> {
    let mut by_db: BTreeMap<&DbName, Vec<&Move>> = BTreeMap::new();
    for m in moves {
        by_db.entry(&m.db).or_default().push(m);
    }
    let mut out = BTreeMap::new();
    for (db, moves) in by_db {
        let Some(db_view) = view.db(db) else { continue };
        let mut fingerprint = Vec::new();
        for m in &moves {
            fingerprint.extend_from_slice(&m.shard.to_be_bytes());
            fingerprint.extend_from_slice(&m.from.0.to_be_bytes());
            fingerprint.extend_from_slice(&m.to.0.to_be_bytes());
        }
        let id = plan_id(&[kind.as_bytes(), db.as_str().as_bytes(), &fingerprint]);
        let mut adds: BTreeMap<SiteId, Vec<Step>> = BTreeMap::new();
        let mut handovers: BTreeMap<SiteId, Vec<Step>> = BTreeMap::new();
        for m in moves {
            adds.entry(m.to)
                .or_default()
                .push(Step::AddReplica { shard: m.shard, upstreams: ready_holders(view, db_view, m.shard) });
            handovers.entry(m.from).or_default().push(Step::HandoverReplica { shard: m.shard, to: m.to });
        }
        let sites: BTreeSet<SiteId> = adds.keys().chain(handovers.keys()).copied().collect();
        let plans = sites
            .into_iter()
            .map(|site| {
                let mut steps = adds.remove(&site).unwrap_or_default();
                steps.extend(handovers.remove(&site).unwrap_or_default());
                let plan = Plan { db: db.clone(), plan_id: id, priority, origin, steps };
                (site, plan)
            })
            .collect();
        out.insert(db.clone(), plans);
    }
    out
}

/// The live sites with a ready replica of `shard`, in id order.
fn ready_holders(view: &ClusterView, db: &DbView, shard: u32) -> Vec<SiteId> {
    let mut sites: Vec<SiteId> = db
        .placement
        .get(shard as usize)
        .into_iter()
        .flat_map(|s| &s.replicas)
        .filter(|r| r.is_ready() && view.is_live(r.site_id))
        .map(|r| r.site_id)
        .collect();
    sites.sort();
    sites
}
