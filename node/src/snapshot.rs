//! Reading what a site publishes from its inventory.

use cairn_gossip::summary::{
    CatchUpProgress, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSnapshot, SiteSummary, StatusText,
    frontier_digest,
};
use cairn_inventory::{DbName, Inventory, InventoryError, PlanId, ReplicaState};

/// The site's current summary: its dbs, replicas (with log sizes, frontiers and catch-up
/// progress, which `progress` tells) and plans (with the status `status` tells).
pub fn read_snapshot(
    inventory: &Inventory,
    site: &SiteSummary,
    progress: impl Fn(&DbName, u32, u64) -> Option<CatchUpProgress>,
    status: impl Fn(&DbName, PlanId) -> String,
) -> Result<SiteSnapshot, InventoryError> {
    // Tombstones too: a drop reaches the other sites as a gossiped tombstone.
    let dbs = inventory.db_records()?;
    let mut replicas = Vec::new();
    for r in inventory.replicas(None)? {
        let stats = inventory.log_stats(&r.db, r.shard)?;
        let frontier = inventory.frontier(&r.db, r.shard)?;
        let phase = match r.state {
            ReplicaState::CatchingUp { .. } => ReplicaPhase::CatchingUp,
            ReplicaState::Ready => ReplicaPhase::Ready,
            ReplicaState::HandingOver { to } => ReplicaPhase::HandingOver { to },
            ReplicaState::Following { caught_up } => ReplicaPhase::Following { caught_up },
        };
        let summary = ReplicaSummary {
            phase,
            entries: stats.entries,
            bytes: stats.bytes,
            frontier_digest: frontier_digest(&frontier),
            frontier,
            progress: match r.state {
                ReplicaState::CatchingUp { .. } | ReplicaState::Following { caught_up: false } => {
                    progress(&r.db, r.shard, stats.bytes)
                }
                _ => None,
            },
        };
        replicas.push((r.db, r.shard, summary));
    }
    let plans = inventory
        .pending_plans()?
        .into_iter()
        .map(|p| {
            let summary = PlanSummary {
                plan_id: p.plan_id,
                priority: p.priority,
                step: p.done,
                steps: p.total(),
                status: StatusText::truncated(&status(&p.db, p.plan_id)),
            };
            (p.db, summary)
        })
        .collect();
    let site =
        SiteSummary { draining: inventory.draining()?, drain: inventory.drain_order()?, ..site.clone() };
    Ok(SiteSnapshot { site, dbs, replicas, plans, revocations: inventory.revocations()? })
}
