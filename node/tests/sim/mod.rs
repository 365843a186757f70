//! A deterministic simulation of many sites' control planes in one process: the real
//! pure cores (summaries, view building, automation, executor decisions, the plan state
//! machine, the planners) in a simulated world — a clock, a network that cuts, delays
//! and drops, sites that die and come back, writers, and an operator — all driven by one
//! seed, so a seed replays a run exactly. Invariants are checked after every round.

#![allow(unreachable_pub)]

pub mod site;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::decoded::DecodeCache;
use cairn_gossip::view::{NodeInput, ViewContext, build_view_cached};
use cairn_gossip::{ClusterView, SiteState};
use cairn_inventory::{
    DbName, DbRecord, DbSettings, Hlc, OperatorSeal, ReplicaState, Replication, Retention, SiteId,
};
use cairn_node::automation::{Answer, AutomationConfig};
use cairn_node::data::replicator::catch_up_from;
use cairn_node::db_settings::alter;
use cairn_node::planner::{self, operator, repair, reshape};
use cairn_transport::PlanRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use site::Site;

/// A gossip round.
pub const ROUND_MS: u64 = 100;
/// A site not heard from for this long is dead in a view (the failure detector).
pub const DEAD_AFTER_MS: u64 = 1_500;
/// Peers each site gossips with per round.
const FANOUT: usize = 3;
/// Chance that one message (a gossip exchange, a plan delivery) is lost.
const LOSS: f64 = 0.1;

/// Automation as the simulated sites run it: a dead site is lost after 5 s.
pub const AUTOMATION: AutomationConfig = AutomationConfig {
    every: Duration::from_millis(ROUND_MS),
    lost_after: Duration::from_secs(5),
    repair: true,
    rebalance: true,
};

/// What one site knows of another through gossip.
#[derive(Debug, Clone)]
struct Heard {
    generation: u64,
    heartbeat_ms: u64,
    key_values: Arc<BTreeMap<String, String>>,
}

/// The world: sites, network, clock, writers, operator.
pub struct World {
    rng: StdRng,
    /// Simulated time (ms).
    pub now: u64,
    /// Rounds run.
    pub round: u64,
    /// Every site ever started, in join order.
    pub sites: Vec<Site>,
    /// Each site's side of the partition (all 0 when healed).
    side: Vec<u8>,
    /// What each site has heard of every site.
    heard: Vec<BTreeMap<SiteId, Heard>>,
    /// Each site's decoded values from its last view build (as the runtime keeps them).
    decoded: Vec<DecodeCache>,
    /// Writes acknowledged: per (db, shard, origin site) the highest seq (an origin's
    /// seqs are dense, and a frontier holds everything up to its seq).
    acked: BTreeMap<(DbName, u32, SiteId), u64>,
    /// The complete replicas after the last round, by site and shard.
    complete: BTreeMap<(SiteId, DbName, u32), site::Replica>,
    dbs_created: u32,
    max_sites: usize,
    /// What happened, for a failing seed's report.
    pub log: Vec<String>,
    /// Counts of what the run did.
    pub stats: BTreeMap<&'static str, u64>,
}

impl World {
    /// A world of `sites` sites (growing to `max_sites` by joins), seeded by `seed`.
    pub fn new(seed: u64, sites: usize, max_sites: usize) -> Self {
        let mut world = Self {
            rng: StdRng::seed_from_u64(seed),
            now: 1_000_000,
            round: 0,
            sites: Vec::new(),
            side: Vec::new(),
            heard: Vec::new(),
            decoded: Vec::new(),
            acked: BTreeMap::new(),
            complete: BTreeMap::new(),
            dbs_created: 0,
            max_sites,
            log: Vec::new(),
            stats: BTreeMap::new(),
        };
        for _ in 0..sites {
            world.join();
        }
        world
    }

    fn note(&mut self, what: String) {
        self.log.push(format!("round {}: {what}", self.round));
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn up(&self) -> Vec<usize> {
        (0..self.sites.len()).filter(|i| self.sites[*i].up).collect()
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.random_range(0..from.len())])
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.sites[a].up && self.sites[b].up && self.side[a] == self.side[b]
    }

    fn index(&self, site: SiteId) -> Option<usize> {
        self.sites.iter().position(|s| s.id == site)
    }

    /// One round. With `chaos`, faults and operator actions may happen in it.
    pub fn step(&mut self, chaos: bool) -> Result<(), String> {
        self.round += 1;
        self.now += ROUND_MS;
        if chaos {
            self.faults();
            self.operate();
        }
        self.gossip();
        for i in self.up() {
            let inputs = self.inputs(i);
            let view = build_view_cached(
                self.sites[i].id,
                &inputs,
                &ViewContext::at(self.now),
                &mut self.decoded[i],
            );
            self.sites[i].view = Some(view);
        }
        for i in self.up() {
            let view = self.sites[i].view.take().expect("built above");
            for what in self.sites[i].execute(&view, self.now) {
                if what.contains("Done") {
                    self.count("plan steps done");
                }
                self.note(what);
            }
            self.sites[i].view = Some(view);
        }
        self.replicate();
        self.write();
        self.automate();
        self.check()
    }

    /// Heals every cut and restarts every dead site.
    pub fn calm(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
        for i in 0..self.sites.len() {
            if !self.sites[i].up {
                self.sites[i].restart(self.now, AUTOMATION);
            }
        }
        self.note("faults stop: cuts healed, every site running".into());
    }

    fn join(&mut self) {
        let index = self.sites.len();
        let id = SiteId(self.rng.random());
        let zone = format!("z{}", self.rng.random_range(0..3));
        self.sites.push(Site::new(id, index, zone, self.now, AUTOMATION));
        self.side.push(0);
        self.heard.push(BTreeMap::new());
        self.decoded.push(DecodeCache::new());
        self.note(format!("site {} joins", id.short()));
    }

    fn faults(&mut self) {
        let up = self.up();
        if up.len() > 1 && self.rng.random_bool(0.01) {
            let i = self.pick(&up).expect("not empty");
            self.sites[i].kill();
            self.heard[i].clear();
            self.decoded[i] = DecodeCache::new();
            self.count("kills");
            self.note(format!("site {} killed", self.sites[i].id.short()));
        }
        let down: Vec<usize> = (0..self.sites.len()).filter(|i| !self.sites[*i].up).collect();
        if let Some(i) = self.pick(&down).filter(|_| self.rng.random_bool(0.03)) {
            self.sites[i].restart(self.now, AUTOMATION);
            self.note(format!("site {} restarted", self.sites[i].id.short()));
        }
        let cut = self.side.iter().any(|s| *s != 0);
        if !cut && self.rng.random_bool(0.005) {
            for i in 0..self.side.len() {
                self.side[i] = self.rng.random_range(0..2);
            }
            self.count("cuts");
            self.note(format!("cut: {:?}", self.side));
        } else if cut && self.rng.random_bool(0.02) {
            self.side.iter_mut().for_each(|s| *s = 0);
            self.note("cut healed".into());
        }
        if self.sites.len() < self.max_sites && self.rng.random_bool(0.004) {
            self.join();
            self.count("joins");
        }
    }

    fn operate(&mut self) {
        let up = self.up();
        let Some(at) = self.pick(&up) else { return };
        let hlc = Hlc { wall_ms: self.now, logical: 0 };
        if self.dbs_created < 3 && self.rng.random_bool(0.006) {
            let name = DbName::new(format!("db{}", self.dbs_created)).expect("a valid name");
            self.dbs_created += 1;
            let (shards, replication) = (self.rng.random_range(1..=6), self.rng.random_range(1..=3));
            let settings = DbSettings::new(shards, replication, Retention::default()).expect("in range");
            let record = DbRecord {
                seal: Some(sealed()),
                ..DbRecord::new(name.clone(), settings, hlc, self.sites[at].id)
            };
            self.sites[at].dbs.insert(name.clone(), record);
            self.count("dbs created");
            self.note(format!(
                "db {name} created at {} ({shards} x {replication})",
                self.sites[at].id.short()
            ));
        }
        if self.rng.random_bool(0.004) {
            let records: Vec<DbRecord> =
                self.sites[at].dbs.values().filter(|r| !r.dropped).cloned().collect();
            if let Some(record) = records.get(self.rng.random_range(0..records.len().max(1))) {
                let factor = Replication::new(self.rng.random_range(1..=3)).expect("in range");
                if let Some(mut changed) = alter(record, Some(factor), None, hlc) {
                    changed.seal = Some(sealed());
                    self.note(format!(
                        "db {} factor {} at {}",
                        record.name,
                        factor.get(),
                        self.sites[at].id.short()
                    ));
                    self.sites[at].dbs.insert(record.name.clone(), changed);
                    self.count("factor changes");
                }
            }
        }
        if self.rng.random_bool(0.006) {
            let Some(view) = self.sites[at].view.clone() else { return };
            let Some(request) = self.operator_request(&view) else { return };
            let Ok(mut preview) = operator::preview(&view, &request, self.sites[at].id) else { return };
            planner::made_from(preview.plans.iter_mut().map(|p| &mut p.plan), &self.now.to_be_bytes());
            self.note(format!(
                "operator {request:?} via {}: {} moves",
                self.sites[at].id.short(),
                preview.moves.len()
            ));
            self.count("operator requests");
            for site_plan in preview.plans {
                let Some(t) = self.index(site_plan.site) else { continue };
                if t == at || (self.connected(at, t) && !self.rng.random_bool(LOSS)) {
                    self.sites[t].offer(site_plan.plan, t != at, self.now);
                }
            }
        }
    }

    /// A move of one random replica to a random live site, or a rebalance.
    fn operator_request(&mut self, view: &ClusterView) -> Option<PlanRequest> {
        if self.rng.random_bool(0.3) {
            return Some(PlanRequest::Rebalance);
        }
        let shards: Vec<(DbName, u32, SiteId)> = view
            .dbs
            .iter()
            .flat_map(|db| {
                db.placement
                    .iter()
                    .flat_map(move |s| s.replicas.iter().map(move |r| (db.name.clone(), s.shard, r.site_id)))
            })
            .collect();
        let (db, shard, from) = shards.get(self.rng.random_range(0..shards.len().max(1)))?.clone();
        let live: Vec<SiteId> =
            view.sites.iter().filter(|s| s.state == SiteState::Live).map(|s| s.site_id).collect();
        let to = *live.get(self.rng.random_range(0..live.len().max(1)))?;
        Some(PlanRequest::Move { db, shard, from, to })
    }

    fn gossip(&mut self) {
        for i in self.up() {
            let me = &self.sites[i];
            let heard = Heard {
                generation: me.started_ms,
                heartbeat_ms: self.now,
                key_values: Arc::new(me.summary()),
            };
            self.heard[i].insert(me.id, heard);
        }
        let n = self.sites.len();
        for i in self.up() {
            for _ in 0..FANOUT {
                let j = self.rng.random_range(0..n);
                if j == i || !self.connected(i, j) || self.rng.random_bool(LOSS) {
                    continue;
                }
                self.merge(i, j);
                self.merge(j, i);
            }
        }
    }

    /// `into` takes what `from` heard that is newer than what it heard.
    fn merge(&mut self, into: usize, from: usize) {
        let theirs: Vec<(SiteId, Heard)> = self.heard[from].iter().map(|(id, h)| (*id, h.clone())).collect();
        for (id, h) in theirs {
            let newer = self.heard[into]
                .get(&id)
                .is_none_or(|mine| (mine.generation, mine.heartbeat_ms) < (h.generation, h.heartbeat_ms));
            if newer {
                self.heard[into].insert(id, h);
            }
        }
    }

    fn inputs(&self, i: usize) -> Vec<NodeInput> {
        self.heard[i]
            .iter()
            .map(|(id, h)| {
                let addr = self.index(*id).map(|j| self.sites[j].addr.clone()).unwrap_or_default();
                NodeInput {
                    site_id: *id,
                    generation: h.generation,
                    gossip_addr: addr.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    live: self.now.saturating_sub(h.heartbeat_ms) <= DEAD_AFTER_MS,
                    last_seen_ms: Some(h.heartbeat_ms),
                    key_values: h.key_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    forged: Vec::new(),
                    unverified: None,
                }
            })
            .collect()
    }

    /// Replicas pull from the complete replicas of their shard they can reach: a
    /// catching-up one from its upstreams (then it is ready), a complete one from the
    /// other complete ones.
    fn replicate(&mut self) {
        let mut pulls = Vec::new();
        for i in self.up() {
            for (key, replica) in &self.sites[i].replicas {
                let sources: Vec<usize> = (0..self.sites.len())
                    .filter(|j| *j != i && self.connected(i, *j))
                    .filter(|j| self.sites[*j].replicas.get(key).is_some_and(|r| r.is_complete()))
                    .collect();
                match &replica.state {
                    ReplicaState::CatchingUp { upstreams } => {
                        let Some(view) = &self.sites[i].view else { continue };
                        let upstreams = catch_up_from(self.sites[i].id, &key.0, key.1, upstreams, view);
                        let from: Vec<usize> =
                            sources.into_iter().filter(|j| upstreams.contains(&self.sites[*j].id)).collect();
                        if !from.is_empty() {
                            pulls.push((i, key.clone(), from[(self.round as usize + i) % from.len()], true));
                        }
                    }
                    ReplicaState::Ready | ReplicaState::HandingOver { .. } => {
                        pulls.extend(sources.into_iter().map(|j| (i, key.clone(), j, false)));
                    }
                    ReplicaState::Following { .. } => {}
                }
            }
        }
        for (i, key, j, finish) in pulls {
            // Some pulls lag a round (and a catch-up takes a few).
            if self.rng.random_bool(if finish { 0.7 } else { 0.4 }) {
                continue;
            }
            let Some(from) = self.sites[j].replicas.get(&key).map(|r| r.frontier.clone()) else { continue };
            if let Some(replica) = self.sites[i].replicas.get_mut(&key) {
                replica.merge(&from);
                if finish && matches!(replica.state, ReplicaState::CatchingUp { .. }) {
                    replica.state = ReplicaState::Ready;
                }
            }
        }
    }

    /// Writers: a few writes a round, each acknowledged by one ready replica.
    fn write(&mut self) {
        let ready: Vec<(usize, (DbName, u32))> = self
            .up()
            .into_iter()
            .flat_map(|i| {
                self.sites[i]
                    .replicas
                    .iter()
                    .filter(|(_, r)| r.state == ReplicaState::Ready)
                    .map(move |(key, _)| (i, key.clone()))
            })
            .collect();
        for _ in 0..2 {
            let Some((i, key)) = ready.get(self.rng.random_range(0..ready.len().max(1))).cloned() else {
                return;
            };
            let id = self.sites[i].id;
            let replica = self.sites[i].replicas.get_mut(&key).expect("listed above");
            let seq = replica.frontier.0.entry(id).or_default();
            *seq += 1;
            let seq = *seq;
            self.acked.insert((key.0, key.1, id), seq);
        }
    }

    fn automate(&mut self) {
        for i in self.up() {
            let Some(view) = self.sites[i].view.take() else { continue };
            let (offers, events) = self.sites[i].automation.round(&view, self.now);
            self.sites[i].view = Some(view);
            for event in events {
                self.note(format!("{} automation: {event:?}", self.sites[i].id.short()));
            }
            for offer in offers {
                let (db, plan_id) = (offer.plan.db.clone(), offer.plan.plan_id);
                let answer = match self.index(offer.site) {
                    Some(t) if t == i => self.sites[i].offer(offer.plan, false, self.now),
                    Some(t) if self.connected(i, t) && !self.rng.random_bool(LOSS) => {
                        self.sites[t].offer(offer.plan, true, self.now)
                    }
                    _ => Answer::NotNow,
                };
                if answer == Answer::AlreadyEnded {
                    self.count("offers already ended");
                }
                if answer != Answer::NotNow {
                    self.note(format!(
                        "{} offered plan {} to {}: {answer:?}",
                        self.sites[i].id.short(),
                        plan_id.short(),
                        offer.site.short()
                    ));
                }
                self.sites[i].automation.answered(&db, plan_id, offer.site, answer);
            }
        }
    }

    /// The newest record of each db any site holds (the operator's latest word).
    fn truth(&self) -> BTreeMap<DbName, DbRecord> {
        let mut newest: BTreeMap<DbName, DbRecord> = BTreeMap::new();
        for record in self.sites.iter().flat_map(|s| s.dbs.values()) {
            let newer = newest.get(&record.name).is_none_or(|r| r.changed < record.changed);
            if newer {
                newest.insert(record.name.clone(), record.clone());
            }
        }
        newest
    }

    /// The invariants, after every round.
    fn check(&mut self) -> Result<(), String> {
        // No acknowledged write is lost: some replica (on any site, running or not) holds it.
        for ((db, shard, origin), seq) in &self.acked {
            let held = self.sites.iter().any(|s| {
                s.replicas.get(&(db.clone(), *shard)).is_some_and(|r| r.frontier.get(*origin) >= *seq)
            });
            if !held {
                return Err(format!("write {db}/{shard} {}:{seq} is on no replica any more", origin.short()));
            }
        }
        // A complete replica goes away only by a handover to a site that holds the shard
        // whole and covers it: a move never leaves a shard with fewer complete replicas
        // than before it began, and a shard's last complete copy never goes.
        let mut complete = BTreeMap::new();
        for site in &self.sites {
            for (key, replica) in site.replicas.iter().filter(|(_, r)| r.is_complete()) {
                complete.insert((site.id, key.0.clone(), key.1), replica.clone());
            }
        }
        let removed: BTreeMap<(SiteId, DbName, u32), site::Replica> = self
            .sites
            .iter_mut()
            .flat_map(|s| {
                let id = s.id;
                std::mem::take(&mut s.removed).into_iter().map(move |((db, shard), r)| ((id, db, shard), r))
            })
            .collect();
        for ((site, db, shard), before) in &self.complete {
            let key = (*site, db.clone(), *shard);
            if complete.contains_key(&key) {
                continue;
            }
            let as_removed = removed.get(&key).unwrap_or(before);
            let ReplicaState::HandingOver { to } = as_removed.state else {
                return Err(format!(
                    "{}'s complete replica of {db}/{shard} went away without a handover",
                    site.short()
                ));
            };
            // The target may have handed its copy on in the same round (a trim of
            // several extras): follow the chain to the replica that stays.
            let mut holder = to;
            let mut passed = BTreeSet::from([*site]);
            let covered = loop {
                let at = (holder, db.clone(), *shard);
                if let Some(stays) = complete.get(&at) {
                    break stays.frontier.covers(&as_removed.frontier);
                }
                match removed.get(&at).map(|r| &r.state) {
                    Some(ReplicaState::HandingOver { to: next }) if passed.insert(holder) => holder = *next,
                    _ => break false,
                }
            };
            if !covered {
                return Err(format!(
                    "{}'s replica of {db}/{shard} went away, handed over to {}, which does not hold it whole",
                    site.short(),
                    to.short()
                ));
            }
        }
        self.complete = complete;
        // Never two replicas of a shard on one site, in any view.
        for site in self.sites.iter().filter(|s| s.up) {
            let Some(view) = &site.view else { continue };
            for db in &view.dbs {
                for shard in &db.placement {
                    let holders: BTreeSet<SiteId> = shard.replicas.iter().map(|r| r.site_id).collect();
                    if holders.len() != shard.replicas.len() {
                        return Err(format!(
                            "{}'s view: {}/{} twice on one site",
                            site.id.short(),
                            db.name,
                            shard.shard
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the cluster has settled: no plan anywhere, every view the same placement
    /// with every site live, every shard at its factor (or on every site) and ready,
    /// and no planner would move anything.
    pub fn settled(&self) -> Result<(), String> {
        if let Some(site) = self.sites.iter().find(|s| !s.plans.is_empty()) {
            let (db, plan) = site.plans.iter().next().expect("not empty");
            let shard = plan.head().map(|step| match step {
                cairn_inventory::Step::AddReplica { shard, .. }
                | cairn_inventory::Step::HandoverReplica { shard, .. }
                | cairn_inventory::Step::RemoveReplica { shard } => *shard,
            });
            let seen =
                site.view.as_ref().and_then(|v| v.db(db)).and_then(|d| d.placement.get(shard? as usize));
            return Err(format!(
                "{} still runs {db}'s plan {} (step {} of {}: {:?}, {:?}); its view of the shard: {:?}",
                site.id.short(),
                plan.plan_id.short(),
                plan.done,
                plan.total(),
                plan.head(),
                plan.origin,
                seen.map(|s| s
                    .replicas
                    .iter()
                    .map(|r| (r.site_id, r.state.to_string(), r.to))
                    .collect::<Vec<_>>())
            ));
        }
        let placement = |view: &ClusterView| -> BTreeMap<(DbName, u32), Vec<(SiteId, String)>> {
            view.dbs
                .iter()
                .flat_map(|db| {
                    db.placement.iter().map(move |s| {
                        let mut holders: Vec<(SiteId, String)> =
                            s.replicas.iter().map(|r| (r.site_id, r.state.to_string())).collect();
                        holders.sort();
                        ((db.name.clone(), s.shard), holders)
                    })
                })
                .collect()
        };
        let first = self.sites[0].view.as_ref().ok_or("no view yet")?;
        for site in &self.sites {
            let view = site.view.as_ref().ok_or("no view yet")?;
            if view.sites.len() != self.sites.len() || view.sites.iter().any(|s| s.state != SiteState::Live) {
                return Err(format!("{}'s view does not show every site live", site.id.short()));
            }
            if !view.plans.is_empty() {
                return Err(format!(
                    "{}'s view still shows {} plans in flight",
                    site.id.short(),
                    view.plans.len()
                ));
            }
            if placement(view) != placement(first) {
                return Err(format!(
                    "{}'s view differs from {}'s",
                    site.id.short(),
                    self.sites[0].id.short()
                ));
            }
        }
        let truth = self.truth();
        for (name, record) in truth.iter().filter(|(_, r)| !r.dropped) {
            let db = first.db(name).ok_or(format!("db {name} is not in the view"))?;
            if db.settings != record.settings {
                return Err(format!("db {name}: the view has other settings than the operator's last"));
            }
            let factor = (record.settings.replication.get() as usize).min(self.sites.len());
            for shard in &db.placement {
                let ready = shard.replicas.iter().filter(|r| r.is_ready()).count();
                if ready != factor || shard.replicas.len() != factor {
                    let holders: Vec<String> =
                        shard.replicas.iter().map(|r| format!("{} {}", r.site_id.short(), r.state)).collect();
                    let plans: Vec<String> = self
                        .sites
                        .iter()
                        .flat_map(|s| s.history.get(name).into_iter().flatten().map(|h| (s.id, h)))
                        .map(|(site, h)| format!("{} {} {:?}", site.short(), h.plan_id.short(), h.end))
                        .collect();
                    return Err(format!(
                        "{name}/{}: {ready} ready of {} replicas ({holders:?}), factor {factor}; plans of {name} that ended: {plans:?}",
                        shard.shard,
                        shard.replicas.len()
                    ));
                }
            }
        }
        let candidates = planner::candidates(first);
        let fixes = repair::repair(
            first,
            &candidates,
            &BTreeSet::new(),
            repair::RepairKinds { recover: true, trim: true },
        );
        if !fixes.adds.is_empty() || !fixes.trims.is_empty() {
            return Err("repair would still change something".into());
        }
        let moves = reshape::reshape(first, &candidates, &BTreeSet::new()).moves;
        if !moves.is_empty() {
            return Err(format!("placement not balanced: {} moves left", moves.len()));
        }
        Ok(())
    }
}

/// A stand-in operator seal: the simulation's sites are honest and the view does not
/// check seals (the verifier in front of it does), but only sealed records are gossiped.
fn sealed() -> OperatorSeal {
    OperatorSeal { certificate: vec![1], signature: vec![1] }
}
