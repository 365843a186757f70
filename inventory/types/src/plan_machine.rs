//! The plan state machine: how a site's pending plan for a db changes.
//!
//! Pure functions from (the current pending plan, an event) to a [`Transition`]: the
//! answer, what the pending slot becomes, and the history entry of a plan that ended.
//! The store applies a transition in one LMDB write transaction, so a crash leaves
//! either the old slot or the new one, never a mix.
//!
//! Rules (from DESIGN.md):
//! - an offer whose priority is ≤ the pending plan's is ignored; a higher one replaces it;
//! - the same `plan_id` again is a no-op, and so is a plan id the history says ended;
//! - `advance` names the step it finished; anything but the current head is a no-op,
//!   so a stale or repeated advance never skips a step;
//! - a plan whose last step is done leaves the slot as `Completed`.

use serde::{Deserialize, Serialize};

use crate::ids::PlanId;
use crate::records::{PendingPlan, Plan, PlanEnd, PlanHistoryEntry, Step};
use crate::settings::ShardCount;

/// The most steps one plan may carry.
pub const MAX_PLAN_STEPS: usize = 100_000;
/// The most upstream sites one `add_replica` step may name.
pub const MAX_UPSTREAMS: usize = 64;

/// What a site answers to an offered plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferOutcome {
    /// The slot was empty; the plan is now pending.
    Accepted,
    /// This very plan is already pending: nothing changed.
    AlreadyPending,
    /// This plan already ended here (found in the history): nothing changed.
    AlreadyEnded {
        /// How it ended.
        end: PlanEnd,
    },
    /// The pending plan has an equal or higher priority: nothing changed.
    Ignored {
        /// The pending plan.
        current: PlanId,
        /// Its priority.
        current_priority: u32,
    },
    /// The new plan took the place of a lower-priority one.
    Replaced {
        /// The plan it replaced (now in the history as `Replaced`).
        old: PlanId,
    },
}

/// Why an offered plan was refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PlanRejection {
    /// A plan must have at least one step.
    #[error("plan has no steps")]
    Empty,
    /// A plan may have at most [`MAX_PLAN_STEPS`] steps, and two per shard of its db.
    #[error("plan has {steps} steps; at most {max} are allowed")]
    TooManySteps {
        /// Steps offered.
        steps: usize,
        /// The limit.
        max: usize,
    },
    /// A step names a shard the db does not have.
    #[error("a step names shard {shard}, but the db has {shards} shards")]
    ShardOutOfRange {
        /// The shard named.
        shard: u32,
        /// The db's shard count.
        shards: u32,
    },
    /// An `add_replica` step names more upstreams than [`MAX_UPSTREAMS`].
    #[error("a step for shard {shard} names {upstreams} upstreams; at most {max} are allowed")]
    TooManyUpstreams {
        /// The shard.
        shard: u32,
        /// Upstreams named.
        upstreams: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether `plan` fits a db of `shards` shards: every step names one of its shards, no
/// step names more than [`MAX_UPSTREAMS`] upstreams, and there are at most two steps per
/// shard (a planner gives a site at most an add and a handover of each shard). A site
/// checks this before it stores a plan, so a stored plan is bounded in size.
pub fn check_fits(plan: &Plan, shards: ShardCount) -> Result<(), PlanRejection> {
    let max = MAX_PLAN_STEPS.min(2 * shards.get() as usize);
    if plan.steps.len() > max {
        return Err(PlanRejection::TooManySteps { steps: plan.steps.len(), max });
    }
    for step in &plan.steps {
        let shard = match step {
            Step::AddReplica { shard, upstreams } => {
                if upstreams.len() > MAX_UPSTREAMS {
                    return Err(PlanRejection::TooManyUpstreams {
                        shard: *shard,
                        upstreams: upstreams.len(),
                        max: MAX_UPSTREAMS,
                    });
                }
                *shard
            }
            Step::HandoverReplica { shard, .. } | Step::RemoveReplica { shard } => *shard,
        };
        if !shards.contains(shard) {
            return Err(PlanRejection::ShardOutOfRange { shard, shards: shards.get() });
        }
    }
    Ok(())
}

/// What `advance` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdvanceOutcome {
    /// The head step was done; the next step is now the head.
    Advanced {
        /// Index of the new head step.
        next: u32,
    },
    /// That was the last step: the plan is complete and left the slot.
    Completed,
    /// The plan or step named is not the current head: nothing changed.
    Stale,
}

/// What the pending slot of a db becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    /// Leave it as it is.
    Unchanged,
    /// Store this plan.
    Set(PendingPlan),
    /// Empty it.
    Clear,
}

/// The result of one event: the answer, the new slot, and the plan that ended, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition<O> {
    /// The answer to the caller.
    pub outcome: O,
    /// What the slot becomes.
    pub slot: SlotChange,
    /// A plan that left the slot, for the history.
    pub ended: Option<PlanHistoryEntry>,
}

impl<O> Transition<O> {
    fn unchanged(outcome: O) -> Self {
        Self { outcome, slot: SlotChange::Unchanged, ended: None }
    }
}

/// A plan offered to a site. `previous_end` is the history's record of this plan id, if
/// it already ended here.
pub fn offer(
    current: Option<&PendingPlan>,
    previous_end: Option<&PlanEnd>,
    plan: Plan,
    now_ms: u64,
) -> Result<Transition<OfferOutcome>, PlanRejection> {
    if plan.steps.is_empty() {
        return Err(PlanRejection::Empty);
    }
    if plan.steps.len() > MAX_PLAN_STEPS {
        return Err(PlanRejection::TooManySteps { steps: plan.steps.len(), max: MAX_PLAN_STEPS });
    }
    if let Some(end) = previous_end {
        return Ok(Transition::unchanged(OfferOutcome::AlreadyEnded { end: end.clone() }));
    }
    let new = PendingPlan {
        db: plan.db,
        plan_id: plan.plan_id,
        priority: plan.priority,
        origin: plan.origin,
        done: 0,
        remaining: plan.steps,
        received_ms: now_ms,
    };
    Ok(match current {
        None => Transition { outcome: OfferOutcome::Accepted, slot: SlotChange::Set(new), ended: None },
        Some(cur) if cur.plan_id == new.plan_id => Transition::unchanged(OfferOutcome::AlreadyPending),
        Some(cur) if cur.priority >= new.priority => Transition::unchanged(OfferOutcome::Ignored {
            current: cur.plan_id,
            current_priority: cur.priority,
        }),
        Some(cur) => Transition {
            outcome: OfferOutcome::Replaced { old: cur.plan_id },
            ended: Some(history_entry(cur, PlanEnd::Replaced { by: new.plan_id }, now_ms)),
            slot: SlotChange::Set(new),
        },
    })
}

/// Step `step` (an index into the original plan) of plan `plan_id` is done.
pub fn advance(
    current: Option<&PendingPlan>,
    plan_id: PlanId,
    step: u32,
    now_ms: u64,
) -> Transition<AdvanceOutcome> {
    let Some(cur) = current else { return Transition::unchanged(AdvanceOutcome::Stale) };
    if cur.plan_id != plan_id || cur.done != step || cur.remaining.is_empty() {
        return Transition::unchanged(AdvanceOutcome::Stale);
    }
    if cur.remaining.len() == 1 {
        let mut finished = history_entry(cur, PlanEnd::Completed, now_ms);
        finished.done = finished.total;
        return Transition {
            outcome: AdvanceOutcome::Completed,
            slot: SlotChange::Clear,
            ended: Some(finished),
        };
    }
    let mut next = cur.clone();
    next.remaining.remove(0);
    next.done += 1;
    Transition {
        outcome: AdvanceOutcome::Advanced { next: next.done },
        slot: SlotChange::Set(next),
        ended: None,
    }
}

/// The operator cancels whatever plan is pending. Answers the cancelled plan's id.
pub fn cancel(current: Option<&PendingPlan>, now_ms: u64) -> Transition<Option<PlanId>> {
    end(current, None, PlanEnd::Cancelled, now_ms)
}

/// The executor gives up on plan `plan_id`. Answers whether it was pending.
pub fn fail(
    current: Option<&PendingPlan>,
    plan_id: PlanId,
    reason: String,
    now_ms: u64,
) -> Transition<Option<PlanId>> {
    end(current, Some(plan_id), PlanEnd::Failed { reason }, now_ms)
}

fn end(
    current: Option<&PendingPlan>,
    only: Option<PlanId>,
    how: PlanEnd,
    now_ms: u64,
) -> Transition<Option<PlanId>> {
    match current {
        Some(cur) if only.is_none_or(|id| id == cur.plan_id) => Transition {
            outcome: Some(cur.plan_id),
            slot: SlotChange::Clear,
            ended: Some(history_entry(cur, how, now_ms)),
        },
        _ => Transition::unchanged(None),
    }
}

fn history_entry(plan: &PendingPlan, end: PlanEnd, now_ms: u64) -> PlanHistoryEntry {
    PlanHistoryEntry {
        db: plan.db.clone(),
        plan_id: plan.plan_id,
        priority: plan.priority,
        origin: plan.origin,
        done: plan.done,
        total: plan.total(),
        end,
        ended_ms: now_ms,
    }
}
