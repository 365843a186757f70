//! What to do about a plan's head step: a pure function of the step, what this site
//! holds, and the cluster view — no inventory, no clock. The executor's shell reads the
//! local facts, calls [`decide`], and applies the actions in order, each idempotent, so
//! a crash between two of them resumes at the same step.

use cairn_gossip::ClusterView;
use cairn_gossip::view::ReplicaView;
use cairn_inventory::{DbName, DbRecord, Frontier, ReplicaState, SiteId, Step};

/// What this site holds that a step depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// This site.
    pub me: SiteId,
    /// Whether this site has the db's settings.
    pub db_known: bool,
    /// This site's replica of the step's shard, if any.
    pub replica: Option<ReplicaState>,
    /// That replica's frontier (needed only to hand it over).
    pub frontier: Frontier,
    /// How long the plan has been pending here (ms).
    pub pending_ms: u64,
}

/// How long a handover waits for a target that neither holds the shard nor runs a plan
/// for its db (it never took its part of the move: the planner died before delivering
/// it, or an operator's plan replaced it) before the plan fails, so it does not hold
/// every later change of the cluster up for ever.
pub const ORPHANED_AFTER_MS: u64 = 60_000;

/// One change to this site's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store the db's settings, learned from the view.
    LearnDb(DbRecord),
    /// Make or change the shard's replica.
    SetReplica(ReplicaState),
    /// Delete the shard's replica and its data.
    RemoveReplica,
}

/// How the step ends this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: advance the plan.
    Done,
    /// Not yet (the actions are still applied), because…
    Wait(String),
    /// The plan cannot go on: fail it, because…
    Fail(String),
}

/// The actions to apply and how the step ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Applied in order before the verdict.
    pub actions: Vec<Action>,
    /// What then.
    pub verdict: Verdict,
}

impl Decision {
    fn new(actions: Vec<Action>, verdict: Verdict) -> Self {
        Self { actions, verdict }
    }

    fn wait(why: impl Into<String>) -> Self {
        Self::new(Vec::new(), Verdict::Wait(why.into()))
    }
}

/// Decides `step` of `db`'s plan.
pub fn decide(db: &DbName, step: &Step, local: &Local, view: &ClusterView) -> Decision {
    match step {
        Step::AddReplica { shard, upstreams } => add(db, *shard, upstreams, local, view),
        Step::RemoveReplica { .. } => Decision::new(vec![Action::RemoveReplica], Verdict::Done),
        Step::HandoverReplica { shard, to } => handover(db, *shard, *to, local, view),
    }
}

fn add(db: &DbName, shard: u32, upstreams: &[SiteId], local: &Local, view: &ClusterView) -> Decision {
    let catching_up = ReplicaState::CatchingUp { upstreams: upstreams.to_vec() };
    let mut actions = Vec::new();
    match &local.replica {
        Some(ReplicaState::Ready | ReplicaState::HandingOver { .. }) => {
            return Decision::new(actions, Verdict::Done);
        }
        Some(ReplicaState::CatchingUp { .. }) => {
            return Decision::wait(format!("{db}/{shard} is catching up"));
        }
        // A copy kept from when this site was a replicant: what it holds is the shard's
        // data, so it catches up the rest like any new replica.
        Some(ReplicaState::Following { .. }) if !upstreams.is_empty() => {
            return Decision::new(
                vec![Action::SetReplica(catching_up)],
                Verdict::Wait(format!("{db}/{shard} is catching up")),
            );
        }
        Some(ReplicaState::Following { .. }) | None => {}
    }
    if !local.db_known {
        match view.db(db) {
            Some(known) => actions.push(Action::LearnDb(known.record())),
            None if view.dropped.iter().any(|d| &d.name == db) => {
                return Decision::new(actions, Verdict::Fail(format!("db {db} was dropped")));
            }
            None => return Decision::wait(format!("db {db} is not in the cluster view yet")),
        }
    }
    if !upstreams.is_empty() {
        // The replicator copies from the upstreams and turns it ready.
        actions.push(Action::SetReplica(catching_up));
        return Decision::new(actions, Verdict::Wait(format!("{db}/{shard} is catching up")));
    }
    // No upstreams: a new, empty shard. Never where the shard already holds data: an
    // empty replica marked ready would answer reads and count toward the factor without
    // holding what was written (a stale allocation, delivered late).
    if let Some(holder) = held_elsewhere(view, db, shard, local.me) {
        return Decision::new(
            actions,
            Verdict::Fail(format!(
                "{db}/{shard} is held by {} already: an empty replica here would not hold its data; plan again",
                holder.short()
            )),
        );
    }
    actions.push(Action::SetReplica(ReplicaState::Ready));
    Decision::new(actions, Verdict::Done)
}

/// A site other than `me` that the view shows holding a replica of the shard with
/// entries, or ready.
fn held_elsewhere(view: &ClusterView, db: &DbName, shard: u32, me: SiteId) -> Option<SiteId> {
    let placement = view.db(db)?.placement.get(shard as usize)?;
    placement.replicas.iter().find(|r| r.site_id != me && (r.is_ready() || r.entries > 0)).map(|r| r.site_id)
}

fn handover(db: &DbName, shard: u32, to: SiteId, local: &Local, view: &ClusterView) -> Decision {
    let Some(replica) = &local.replica else { return Decision::new(Vec::new(), Verdict::Done) };
    let handing_over = ReplicaState::HandingOver { to };
    let target = ready_target(view, db, shard, to);
    if target.is_none() && local.pending_ms >= ORPHANED_AFTER_MS && !target_coming(view, db, shard, to) {
        // Back to taking writes: this replica stays.
        let actions =
            if *replica == handing_over { vec![Action::SetReplica(ReplicaState::Ready)] } else { Vec::new() };
        return Decision::new(
            actions,
            Verdict::Fail(format!(
                "{} has not taken its part of the move of {db}/{shard} in {} s (it is not live, or neither holds the shard nor runs a plan for {db}); the replica stays here",
                to.short(),
                local.pending_ms / 1000
            )),
        );
    }
    let mut actions = Vec::new();
    if *replica != handing_over {
        // Keep taking writes until the target is ready: the shard never has fewer ready
        // replicas than before the move.
        if target.is_none() {
            return Decision::wait(format!("waiting for {} to be ready before handing over", to.short()));
        }
        actions.push(Action::SetReplica(handing_over));
    }
    if !target.is_some_and(|r| r.frontier.covers(&local.frontier)) {
        return Decision::new(
            actions,
            Verdict::Wait(format!("waiting for {} to be ready and cover us", to.short())),
        );
    }
    actions.push(Action::RemoveReplica);
    Decision::new(actions, Verdict::Done)
}

/// Whether `to` is live and, by the view, holds `db`/`shard` or runs a plan for `db`
/// (so it may yet become ready).
fn target_coming(view: &ClusterView, db: &DbName, shard: u32, to: SiteId) -> bool {
    view.is_live(to)
        && (view.replicas(db, shard).iter().any(|r| r.site_id == to)
            || view.plans.iter().any(|p| &p.db == db && p.site_id == to))
}

/// `to`'s replica of `db`/`shard`, if the view shows it live and ready.
fn ready_target<'v>(view: &'v ClusterView, db: &DbName, shard: u32, to: SiteId) -> Option<&'v ReplicaView> {
    if !view.is_live(to) {
        return None;
    }
    let placement = view.db(db)?.placement.get(shard as usize)?;
    placement.replicas.iter().find(|r| r.site_id == to && r.is_ready())
}
