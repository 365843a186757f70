//! One simulated site: what its inventory would hold (dbs, replicas with their frontiers,
//! the pending plan per db and the plan history), what it publishes (the real
//! `summarize`), and its control loops run through the real pure cores: the executor's
//! `decide`, the inventory's `plan_machine`, `db_settings::local_updates` and
//! `Automation`. Only the I/O is simulated.

use std::collections::BTreeMap;

use cairn_gossip::ClusterView;
use cairn_gossip::summary::{
    Label, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSnapshot, SiteSummary, StatusText, frontier_digest,
    summarize,
};
use cairn_inventory::plan_machine::{self, OfferOutcome, SlotChange, Transition};
use cairn_inventory::{
    DbName, DbRecord, Frontier, PendingPlan, Plan, PlanEnd, PlanHistoryEntry, ReplicaState, Role, SiteId,
    Step,
};
use cairn_node::automation::{Answer, Automation, AutomationConfig};
use cairn_node::db_settings::{LocalUpdate, local_updates};
use cairn_node::executor::{Action, Local, Verdict, decide};

/// Plans a site remembers per db (as the inventory's history limit).
pub const HISTORY: usize = 32;

/// One replica: its state and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// As the inventory keeps it.
    pub state: ReplicaState,
    /// Per origin, the seq up to which it holds every entry.
    pub frontier: Frontier,
}

impl Replica {
    /// Ready or handing over: holds the shard whole.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, ReplicaState::Ready | ReplicaState::HandingOver { .. })
    }

    /// Takes in what `other` holds (a pull).
    pub fn merge(&mut self, other: &Frontier) {
        for (origin, seq) in other.iter() {
            let mine = self.frontier.0.entry(origin).or_default();
            *mine = (*mine).max(seq);
        }
    }
}

/// A simulated site.
#[derive(Debug, Clone)]
pub struct Site {
    /// Its id.
    pub id: SiteId,
    /// Its address (only shown in views).
    pub addr: String,
    /// Its zone.
    pub zone: String,
    /// Running (else killed; what it stored stays).
    pub up: bool,
    /// When its current process started.
    pub started_ms: u64,
    /// Its db records (durable).
    pub dbs: BTreeMap<DbName, DbRecord>,
    /// Its replicas (durable).
    pub replicas: BTreeMap<(DbName, u32), Replica>,
    /// Its pending plan per db (durable).
    pub plans: BTreeMap<DbName, PendingPlan>,
    /// Plans that ended, per db, the last [`HISTORY`] (durable).
    pub history: BTreeMap<DbName, Vec<PlanHistoryEntry>>,
    /// Its automation (lost when killed).
    pub automation: Automation,
    /// The view it built this round (lost when killed).
    pub view: Option<ClusterView>,
    /// Replicas removed since the world last looked, as they were when removed.
    pub removed: Vec<((DbName, u32), Replica)>,
}

impl Site {
    /// A new site, started at `now`.
    pub fn new(id: SiteId, index: usize, zone: String, now: u64, config: AutomationConfig) -> Self {
        Self {
            id,
            addr: format!("10.{}.{}.1:7000", index / 200, index % 200),
            zone,
            up: true,
            started_ms: now,
            dbs: BTreeMap::new(),
            replicas: BTreeMap::new(),
            plans: BTreeMap::new(),
            history: BTreeMap::new(),
            automation: Automation::new(id, config, now),
            view: None,
            removed: Vec::new(),
        }
    }

    /// Kills the process: what it stored stays, what it held in memory is gone.
    pub fn kill(&mut self) {
        self.up = false;
        self.view = None;
    }

    /// Starts a new process at `now`.
    pub fn restart(&mut self, now: u64, config: AutomationConfig) {
        self.up = true;
        self.started_ms = now;
        self.automation = Automation::new(self.id, config, now);
    }

    /// What it publishes, as the real node encodes it.
    pub fn summary(&self) -> BTreeMap<String, String> {
        let site = SiteSummary {
            role: Role::Core,
            addr: Label::new(self.addr.clone()).expect("short"),
            version: Label::new("sim").expect("short"),
            started_ms: self.started_ms,
            zone: Some(Label::new(self.zone.clone()).expect("short")),
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
            drain: None,
        };
        let replicas = self
            .replicas
            .iter()
            .map(|((db, shard), r)| {
                let phase = match &r.state {
                    ReplicaState::CatchingUp { .. } => ReplicaPhase::CatchingUp,
                    ReplicaState::Ready => ReplicaPhase::Ready,
                    ReplicaState::HandingOver { to } => ReplicaPhase::HandingOver { to: *to },
                    ReplicaState::Following { caught_up } => {
                        ReplicaPhase::Following { caught_up: *caught_up }
                    }
                };
                let entries: u64 = r.frontier.iter().map(|(_, seq)| seq).sum();
                let summary = ReplicaSummary {
                    phase,
                    entries,
                    bytes: entries * 100,
                    frontier_digest: frontier_digest(&r.frontier),
                    frontier: r.frontier.clone(),
                    progress: None,
                };
                (db.clone(), *shard, summary)
            })
            .collect();
        let plans = self
            .plans
            .iter()
            .map(|(db, p)| {
                let summary = PlanSummary {
                    plan_id: p.plan_id,
                    priority: p.priority,
                    step: p.done,
                    steps: p.total(),
                    status: StatusText::truncated("running"),
                };
                (db.clone(), summary)
            })
            .collect();
        summarize(&SiteSnapshot {
            site,
            dbs: self.dbs.values().cloned().collect(),
            replicas,
            plans,
            revocations: None,
        })
    }

    fn apply<O>(&mut self, db: &DbName, transition: Transition<O>) -> O {
        match transition.slot {
            SlotChange::Unchanged => {}
            SlotChange::Set(plan) => drop(self.plans.insert(db.clone(), plan)),
            SlotChange::Clear => drop(self.plans.remove(db)),
        }
        if transition.ended.as_ref().is_some_and(|e| e.end != PlanEnd::Completed) {
            // As the inventory does in the same transaction: a plan that ended unfinished
            // has its handovers undone, except of shards the plan now pending hands over.
            let keep: Vec<u32> = self
                .plans
                .get(db)
                .into_iter()
                .flat_map(|p| &p.remaining)
                .filter_map(|s| match s {
                    Step::HandoverReplica { shard, .. } => Some(*shard),
                    _ => None,
                })
                .collect();
            for ((name, shard), replica) in &mut self.replicas {
                if name == db
                    && matches!(replica.state, ReplicaState::HandingOver { .. })
                    && !keep.contains(shard)
                {
                    replica.state = ReplicaState::Ready;
                }
            }
        }
        if let Some(ended) = transition.ended {
            let history = self.history.entry(db.clone()).or_default();
            history.push(ended);
            if history.len() > HISTORY {
                history.remove(0);
            }
        }
        transition.outcome
    }

    /// A plan offered to this site: as the service answers `Schedule` (`from_peer`: a
    /// db not known here yet is "not now") or as automation offers to its own site.
    pub fn offer(&mut self, plan: Plan, from_peer: bool, now: u64) -> Answer {
        let known = self.dbs.get(&plan.db).filter(|r| !r.dropped).map(|r| r.settings.shards);
        let viewed = self.view.as_ref().and_then(|v| v.db(&plan.db)).map(|d| d.settings.shards);
        match known.or(viewed) {
            Some(shards) if plan_machine::check_fits(&plan, shards).is_err() => return Answer::Taken,
            None if from_peer => return Answer::NotNow,
            _ => {}
        }
        let db = plan.db.clone();
        let previous = self.history.get(&db).and_then(|h| h.iter().find(|e| e.plan_id == plan.plan_id));
        let previous = previous.map(|e| e.end.clone());
        match plan_machine::offer(self.plans.get(&db), previous.as_ref(), plan, now) {
            Ok(transition) => match self.apply(&db, transition) {
                OfferOutcome::AlreadyEnded { .. } => Answer::AlreadyEnded,
                _ => Answer::Taken,
            },
            Err(_) => Answer::Taken,
        }
    }

    /// One executor round against `view`: db settings taken up, then each plan's steps
    /// until one waits. Answers what it did, for the log.
    pub fn execute(&mut self, view: &ClusterView, now: u64) -> Vec<String> {
        let records: Vec<DbRecord> = self.dbs.values().cloned().collect();
        for update in local_updates(&records, view) {
            match update {
                LocalUpdate::Adopt(record) => drop(self.dbs.insert(record.name.clone(), record)),
                LocalUpdate::Drop(tombstone) => {
                    self.replicas.retain(|(db, _), _| *db != tombstone.name);
                    self.plans.remove(&tombstone.name);
                    self.dbs.insert(tombstone.name.clone(), tombstone);
                }
            }
        }
        let mut done = Vec::new();
        let dbs: Vec<DbName> = self.plans.keys().cloned().collect();
        for db in dbs {
            while let Some(plan) = self.plans.get(&db).cloned() {
                let Some(step) = plan.head().cloned() else { break };
                let shard = match &step {
                    Step::AddReplica { shard, .. }
                    | Step::HandoverReplica { shard, .. }
                    | Step::RemoveReplica { shard } => *shard,
                };
                let key = (db.clone(), shard);
                let replica = self.replicas.get(&key);
                let local = Local {
                    me: self.id,
                    db_known: self.dbs.get(&db).is_some_and(|r| !r.dropped),
                    replica: replica.map(|r| r.state.clone()),
                    frontier: replica.map(|r| r.frontier.clone()).unwrap_or_default(),
                    pending_ms: now.saturating_sub(plan.received_ms),
                };
                let decision = decide(&db, &step, &local, view);
                if !decision.actions.is_empty() || !matches!(decision.verdict, Verdict::Wait(_)) {
                    done.push(format!(
                        "{} plan {} step {}: {:?} -> {:?} {:?}",
                        self.id.short(),
                        plan.plan_id.short(),
                        plan.done,
                        step,
                        decision
                            .actions
                            .iter()
                            .map(|a| match a {
                                Action::LearnDb(_) => "learn db".to_owned(),
                                other => format!("{other:?}"),
                            })
                            .collect::<Vec<_>>(),
                        decision.verdict
                    ));
                }
                for action in decision.actions {
                    match action {
                        Action::LearnDb(record) => drop(self.dbs.insert(db.clone(), record)),
                        Action::SetReplica(state) => {
                            self.replicas
                                .entry(key.clone())
                                .and_modify(|r| r.state = state.clone())
                                .or_insert(Replica { state, frontier: Frontier::default() });
                        }
                        Action::RemoveReplica => {
                            if let Some(gone) = self.replicas.remove(&key) {
                                self.removed.push((key.clone(), gone));
                            }
                        }
                    }
                }
                match decision.verdict {
                    Verdict::Done => {
                        let advanced = plan_machine::advance(Some(&plan), plan.plan_id, plan.done, now);
                        self.apply(&db, advanced);
                    }
                    Verdict::Wait(_) => break,
                    Verdict::Fail(why) => {
                        let failed = plan_machine::fail(Some(&plan), plan.plan_id, why, now);
                        self.apply(&db, failed);
                        break;
                    }
                }
            }
        }
        done
    }
}
