//! Pending plans and plan history in the store: each event of
//! [`crate::plan_machine`] applied in one write transaction.

use heed::RwTxn;

use crate::error::Result;
use crate::ids::{DbName, PlanId};
use crate::keys;
use crate::plan_machine::{self, AdvanceOutcome, OfferOutcome, SlotChange, Transition};
use crate::records::{PendingPlan, Plan, PlanHistoryEntry, ReplicaRecord, ReplicaState, Step};
use crate::store::{Inventory, decode_or_skip, decode_record, get_record, now_ms, put_record};

impl Inventory {
    /// Offers a plan to this site: accepted, ignored or replacing the pending one, by
    /// priority (see [`plan_machine::offer`]). One transaction. A replaced plan's
    /// handovers in progress are undone (the replicas take writes again) unless the new
    /// plan hands the same shard over too: only a plan's step ever finishes a handover.
    pub fn offer(&self, plan: &Plan) -> Result<OfferOutcome> {
        let key = keys::db(&plan.db);
        self.write(|txn| {
            let current = self.pending_in(txn, &key)?;
            let previous = self.history_in(txn, &plan.db)?.into_iter().find(|h| h.plan_id == plan.plan_id);
            let transition = plan_machine::offer(
                current.as_ref(),
                previous.as_ref().map(|h| &h.end),
                plan.clone(),
                now_ms(),
            )?;
            let outcome = self.apply(txn, &plan.db, transition)?;
            if let OfferOutcome::Replaced { .. } = outcome {
                let still: Vec<u32> = plan
                    .steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::HandoverReplica { shard, .. } => Some(*shard),
                        _ => None,
                    })
                    .collect();
                self.undo_handovers(txn, &key, &still)?;
            }
            Ok(outcome)
        })
    }

    /// Step `step` of plan `plan_id` is done: the head step is dropped, atomically. A
    /// stale or repeated call changes nothing (see [`plan_machine::advance`]).
    pub fn advance(&self, db: &DbName, plan_id: PlanId, step: u32) -> Result<AdvanceOutcome> {
        let key = keys::db(db);
        self.write(|txn| {
            let current = self.pending_in(txn, &key)?;
            self.apply(txn, db, plan_machine::advance(current.as_ref(), plan_id, step, now_ms()))
        })
    }

    /// Cancels the pending plan of `db`, answering its id if there was one. In the same
    /// transaction, this site's replicas of `db` that the plan had started handing over
    /// take writes again (`ready`): a handover only ever runs as a plan's step, and
    /// without its plan it would never finish. Replicas the plan added stay (they catch
    /// up and turn ready; extras are trimmed like any other).
    pub fn cancel_plan(&self, db: &DbName) -> Result<Option<PlanId>> {
        let key = keys::db(db);
        self.write(|txn| {
            let current = self.pending_in(txn, &key)?;
            let cancelled = self.apply(txn, db, plan_machine::cancel(current.as_ref(), now_ms()))?;
            if cancelled.is_some() {
                self.undo_handovers(txn, &key, &[])?;
            }
            Ok(cancelled)
        })
    }

    /// Returns the db's handing-over replicas (except those of `keep` shards) to
    /// `ready`, inside `txn`.
    fn undo_handovers(&self, txn: &mut RwTxn<'_>, db_key: &[u8], keep: &[u32]) -> Result<()> {
        let mut back = Vec::new();
        for item in self.tables.replicas.prefix_iter(txn, db_key)? {
            let (k, bytes) = item?;
            let mut record: ReplicaRecord = decode_record(bytes, || keys::describe("replicas", k))?;
            if matches!(record.state, ReplicaState::HandingOver { .. }) && !keep.contains(&record.shard) {
                record.state = ReplicaState::Ready;
                record.updated_ms = now_ms();
                back.push((k.to_vec(), record));
            }
        }
        for (k, record) in back {
            put_record(self.tables.replicas, txn, &k, &record, "replica record")?;
        }
        Ok(())
    }

    /// Gives up on plan `plan_id` of `db`, recording why (its handovers in progress are
    /// undone, as for a cancel). Answers its id if it was pending.
    pub fn fail_plan(&self, db: &DbName, plan_id: PlanId, reason: &str) -> Result<Option<PlanId>> {
        let key = keys::db(db);
        self.write(|txn| {
            let current = self.pending_in(txn, &key)?;
            let failed = self.apply(
                txn,
                db,
                plan_machine::fail(current.as_ref(), plan_id, reason.to_owned(), now_ms()),
            )?;
            if failed.is_some() {
                self.undo_handovers(txn, &key, &[])?;
            }
            Ok(failed)
        })
    }

    /// The pending plan of `db`, if any.
    pub fn pending_plan(&self, db: &DbName) -> Result<Option<PendingPlan>> {
        let key = keys::db(db);
        self.read(|txn| get_record(self.tables.plans, txn, &key, &keys::describe("plans", &key)))
    }

    /// Every pending plan (one per db at most). Corrupt records are skipped with a warning.
    pub fn pending_plans(&self) -> Result<Vec<PendingPlan>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in self.tables.plans.iter(txn)? {
                let (key, bytes) = item?;
                out.extend(decode_or_skip("plans", key, bytes));
            }
            Ok(out)
        })
    }

    /// The finished plans of `db`, oldest first (at most the configured limit).
    pub fn plan_history(&self, db: &DbName) -> Result<Vec<PlanHistoryEntry>> {
        self.read(|txn| self.history_in(txn, db))
    }

    pub(crate) fn pending_in(&self, txn: &heed::RoTxn<'_>, key: &[u8]) -> Result<Option<PendingPlan>> {
        get_record(self.tables.plans, txn, key, &keys::describe("plans", key))
    }

    fn history_in(&self, txn: &heed::RoTxn<'_>, db: &DbName) -> Result<Vec<PlanHistoryEntry>> {
        let mut out = Vec::new();
        for item in self.tables.plan_history.prefix_iter(txn, &keys::db(db))? {
            let (key, bytes) = item?;
            out.extend(decode_or_skip("plan_history", key, bytes));
        }
        Ok(out)
    }

    /// Writes a transition's slot change and history entry.
    pub(crate) fn apply<O>(&self, txn: &mut RwTxn<'_>, db: &DbName, transition: Transition<O>) -> Result<O> {
        let key = keys::db(db);
        match &transition.slot {
            SlotChange::Unchanged => {}
            SlotChange::Set(plan) => put_record(self.tables.plans, txn, &key, plan, "pending plan")?,
            SlotChange::Clear => {
                self.tables.plans.delete(txn, &key)?;
            }
        }
        if let Some(ended) = &transition.ended {
            self.push_history(txn, &key, ended)?;
        }
        Ok(transition.outcome)
    }

    /// Appends to a db's history and trims it to the configured limit.
    fn push_history(&self, txn: &mut RwTxn<'_>, db_key: &[u8], entry: &PlanHistoryEntry) -> Result<()> {
        let table = self.tables.plan_history;
        let mut numbers = Vec::new();
        for item in table.prefix_iter(txn, db_key)? {
            let (key, _) = item?;
            numbers.extend(keys::u64_suffix(&key[db_key.len()..]));
        }
        let next = numbers.last().map_or(0, |n| n + 1);
        put_record(table, txn, &keys::with_u64(db_key, next), entry, "plan history entry")?;
        let keep = self.config.plan_history_limit.saturating_sub(1);
        let excess = numbers.len().saturating_sub(keep);
        for n in &numbers[..excess] {
            table.delete(txn, &keys::with_u64(db_key, *n))?;
        }
        Ok(())
    }
}
