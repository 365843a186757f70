//! The executor: runs the head step of each pending plan, then advances the plan in the
//! inventory. Steps are idempotent, so a crash at any moment resumes at the same step.
//!
//! What a step does is decided by [`decide`] (pure: step, local facts, view → actions and
//! a verdict); this module reads the facts and applies the actions. Steps:
//! `add_replica` makes the replica (ready at once when it has no upstreams — a new,
//! empty shard, and only while no other site holds the shard — else `catching_up`, which
//! the replicator copies and turns ready; the step waits for that); `remove_replica`;
//! and `handover_replica` (once the view shows the target ready, the replica refuses
//! writes; it is deleted once the view shows the target covering our frontier). A plan
//! that ends unfinished (replaced, cancelled, failed) has its handovers undone by the
//! inventory in the same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, Frontier, Inventory, InventoryError, PendingPlan, PlanId, Step};

pub use decide::{Action, Decision, Local, ORPHANED_AFTER_MS, Verdict, decide};

mod decide;
use tokio::sync::watch;

/// What one attempt at a plan's head step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// The step is done and the plan advanced.
    Advanced,
    /// The step cannot finish yet (e.g. a handover waiting for its target).
    Waiting(String),
    /// The plan was failed.
    Failed(String),
}

/// Runs the head step of `plan` once: reads what this site holds, [`decide`]s, applies
/// the actions, then advances, waits or fails the plan.
pub fn run_head(
    inv: &Inventory,
    view: &ClusterView,
    plan: &PendingPlan,
) -> Result<StepResult, InventoryError> {
    let db = &plan.db;
    let Some(step) = plan.head() else { return Ok(StepResult::Waiting("no steps".into())) };
    let shard = match step {
        Step::AddReplica { shard, .. }
        | Step::HandoverReplica { shard, .. }
        | Step::RemoveReplica { shard } => *shard,
    };
    let replica = inv.replica(db, shard)?.map(|r| r.state);
    let frontier = match (step, &replica) {
        (Step::HandoverReplica { .. }, Some(_)) => inv.frontier(db, shard)?,
        _ => Frontier::default(),
    };
    let local = Local {
        me: inv.identity().site_id,
        db_known: inv.db(db)?.is_some(),
        replica,
        frontier,
        pending_ms: cairn_inventory::now_ms().saturating_sub(plan.received_ms),
    };
    let decision = decide(db, step, &local, view);
    for action in decision.actions {
        match action {
            Action::LearnDb(record) => inv.put_db(&record)?,
            Action::SetReplica(state) => drop(inv.set_replica(db, shard, state)?),
            Action::RemoveReplica => drop(inv.remove_replica(db, shard)?),
        }
    }
    match decision.verdict {
        Verdict::Done => {
            inv.advance(db, plan.plan_id, plan.done)?;
            Ok(StepResult::Advanced)
        }
        Verdict::Wait(why) => Ok(StepResult::Waiting(why)),
        Verdict::Fail(why) => {
            inv.fail_plan(db, plan.plan_id, &why)?;
            Ok(StepResult::Failed(why))
        }
    }
}

/// The longest pause between two attempts at a failing step.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the executor's last attempt at a plan's head step found.
#[derive(Debug, Clone)]
enum Note {
    /// The step waits for something (a catch-up, a handover's target).
    Waiting(String),
    /// The step failed `failures` times in a row; next attempt not before `retry_at`.
    Failing { error: String, failures: u32, retry_at: Instant },
}

/// Why each db's plan is waiting or failing, by the executor's last attempt at its head
/// step: published as the plan's status, so `dump` and `plan show` say what a plan waits
/// for; and when a failing step may be tried again (backoff doubling from one round to
/// [`MAX_BACKOFF`]).
#[derive(Debug, Default)]
pub struct StepNotes {
    notes: Mutex<HashMap<DbName, (PlanId, Note)>>,
    steps_done: std::sync::atomic::AtomicU64,
}

impl StepNotes {
    /// Plan steps this site has completed since it started.
    pub fn steps_done(&self) -> u64 {
        self.steps_done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The status of `db`'s plan `plan`: `waiting: <why>` after a wait, `error (failed
    /// N times, retrying): <error>` after failures, else `running`.
    pub fn status(&self, db: &DbName, plan: PlanId) -> String {
        let notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        match notes.get(db) {
            Some((id, Note::Waiting(why))) if *id == plan => format!("waiting: {why}"),
            Some((id, Note::Failing { error, failures, .. })) if *id == plan => {
                format!("error (failed {failures} times, retrying): {error}")
            }
            _ => "running".into(),
        }
    }

    fn set(&self, db: &DbName, plan: PlanId, why: Option<String>) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        match why {
            Some(why) => notes.insert(db.clone(), (plan, Note::Waiting(why))),
            None => notes.remove(db),
        };
    }

    /// Whether `db`'s plan `plan` may be tried at `now` (not backing off after a failure).
    fn may_run(&self, db: &DbName, plan: PlanId, now: Instant) -> bool {
        let notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        !matches!(notes.get(db), Some((id, Note::Failing { retry_at, .. })) if *id == plan && now < *retry_at)
    }

    /// Records a failed attempt at `db`'s plan `plan` at `now`, with a backoff of
    /// `every` × 2^(failures − 1), at most [`MAX_BACKOFF`].
    fn failed(&self, db: &DbName, plan: PlanId, error: String, every: Duration, now: Instant) -> u32 {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = match notes.get(db) {
            Some((id, Note::Failing { failures, .. })) if *id == plan => failures + 1,
            _ => 1,
        };
        let backoff = every.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
        notes.insert(db.clone(), (plan, Note::Failing { error, failures, retry_at: now + backoff }));
        failures
    }
}

/// One executor round: takes up db setting changes and drops, then runs each pending
/// plan's steps until one waits. A step that fails (an inventory error) is recorded in
/// `notes` and tried again after a backoff; it does not stop the other dbs' plans.
/// `replicas_changed` is told whenever a step waits (e.g. on a replica it made to catch
/// up), so the replicator looks at the replicas without waiting for its own tick.
/// Answers how many plans it found pending.
pub fn run_round(
    inv: &Inventory,
    view: &ClusterView,
    notes: &StepNotes,
    every: Duration,
    replicas_changed: &tokio::sync::Notify,
) -> Result<usize, InventoryError> {
    // Settings changes and drops first, so no step runs for a dropped db. A failure
    // here is retried next round; it does not hold up the plans.
    if let Err(error) = crate::db_settings::sync_local(inv, view) {
        tracing::warn!(%error, "taking up db setting changes failed; retrying next round");
    }
    let pending = inv.pending_plans()?;
    let found = pending.len();
    for plan in pending {
        let (db, plan_id) = (plan.db.clone(), plan.plan_id);
        if !notes.may_run(&db, plan_id, Instant::now()) {
            continue;
        }
        if let Err(error) = run_plan(inv, view, plan, notes, replicas_changed) {
            let failures = notes.failed(&db, plan_id, error.to_string(), every, Instant::now());
            tracing::warn!(%db, plan = %plan_id.short(), %error, failures, "plan step failed; retrying with backoff");
        }
    }
    Ok(found)
}

/// Runs `plan`'s steps until one waits, so a plan of many quick steps does not take one
/// round per step.
fn run_plan(
    inv: &Inventory,
    view: &ClusterView,
    plan: PendingPlan,
    notes: &StepNotes,
    replicas_changed: &tokio::sync::Notify,
) -> Result<(), InventoryError> {
    let mut plan = Some(plan);
    while let Some(p) = plan.take() {
        match run_head(inv, view, &p)? {
            StepResult::Advanced => {
                notes.steps_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                notes.set(&p.db, p.plan_id, None);
                plan = inv.pending_plan(&p.db)?;
            }
            StepResult::Waiting(why) => {
                replicas_changed.notify_one();
                tracing::debug!(db = %p.db, %why, "plan step waiting");
                notes.set(&p.db, p.plan_id, Some(why));
            }
            StepResult::Failed(why) => tracing::warn!(db = %p.db, %why, "plan failed"),
        }
    }
    Ok(())
}

/// The longest the executor goes without a round while neither the inventory nor the
/// view changed.
const RUN_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Runs [`run_round`] every `every`, then keeps a replicant's copies of the dbs in
/// `follow` ([`crate::follow::sync`]), until the task is dropped.
pub async fn run(
    inventory: Arc<Inventory>,
    view: watch::Receiver<Arc<ClusterView>>,
    every: Duration,
    replicas_changed: Arc<tokio::sync::Notify>,
    notes: Arc<StepNotes>,
    follow: Arc<[DbName]>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A site that follows nothing syncs once (removing copies left from a replicant
    // past), not every round.
    let mut synced_once = false;
    // What the last round read, if it found no plan: with the same inventory (no commit
    // since) and the same view, a round would find none again, so it is skipped, up to a
    // round every RUN_AT_LEAST_EVERY. A round that found plans is followed by another.
    let mut idle: Option<(u64, Arc<ClusterView>, tokio::time::Instant)> = None;
    loop {
        ticker.tick().await;
        let current = view.borrow().clone();
        // Counted before the round reads: a commit racing with it makes the next round run.
        let commits = inventory.commits();
        if follow.is_empty()
            && idle.as_ref().is_some_and(|(seen, seen_view, at)| {
                *seen == commits && Arc::ptr_eq(seen_view, &current) && at.elapsed() < RUN_AT_LEAST_EVERY
            })
        {
            continue;
        }
        let round_view = current.clone();
        let (inv, changed, notes, follow) =
            (inventory.clone(), replicas_changed.clone(), notes.clone(), follow.clone());
        let sync = !follow.is_empty() || !synced_once;
        let result = crate::supervisor::blocking(move || {
            let plans = run_round(&inv, &current, &notes, every, &changed)?;
            if sync && crate::follow::sync(&inv, &follow, &current)? {
                changed.notify_one();
            }
            Ok::<usize, InventoryError>(plans)
        })
        .await;
        idle = None;
        match result {
            Ok(plans) => {
                synced_once = true;
                if plans == 0 {
                    idle = Some((commits, round_view, tokio::time::Instant::now()));
                }
            }
            Err(error) => tracing::warn!(%error, "executor round failed; retrying next round"),
        }
    }
}
