//! Writes and reads of shard logs, as requests from clients.
//!
//! A write goes to a ready replica of the shard on this site: appended in one durable
//! transaction, answered with the ids after commit. Reads page through the local log in
//! arrival order. A site without a suitable replica answers with the sites that have
//! one, as its cluster view says, so the client can go there.

use std::net::SocketAddr;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, Inventory, InventoryError, MAX_PAYLOAD, ReplicaState, SiteId};
use cairn_transport::{ReadEntry, Response};

/// The most entries one publish may carry.
pub const MAX_PUBLISH_MESSAGES: usize = 65_536;
/// The most entries one read answers.
pub const MAX_READ_ENTRIES: u32 = 10_000;
/// A read answer stops growing past about this many bytes of entries: nothing beyond it
/// is even decoded.
pub const MAX_READ_BYTES: usize = 256 << 10;

/// What a publish can be answered without touching the log.
pub fn check_publish(messages: &[serde_bytes::ByteBuf]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("nothing to publish: no messages".into());
    }
    if messages.len() > MAX_PUBLISH_MESSAGES {
        return Err(format!("{} messages in one publish; at most {MAX_PUBLISH_MESSAGES}", messages.len()));
    }
    if let Some((i, m)) = messages.iter().enumerate().find(|(_, m)| m.len() > MAX_PAYLOAD) {
        return Err(format!("message {i} has {} bytes; at most {MAX_PAYLOAD}", m.len()));
    }
    Ok(())
}

/// Why a replica in `state` here (`None`: no replica) takes no writes.
pub fn not_writable(db: &DbName, shard: u32, state: Option<&ReplicaState>) -> String {
    match state {
        Some(ReplicaState::Ready) => format!("the replica of {db}/{shard} here is ready"),
        Some(ReplicaState::CatchingUp { .. }) => format!("the replica of {db}/{shard} here is catching up"),
        Some(ReplicaState::HandingOver { to }) => {
            format!("the replica of {db}/{shard} here is handing over to {}", to.short())
        }
        Some(ReplicaState::Following { .. }) => {
            format!("the copy of {db}/{shard} here is a replicant's read-only copy")
        }
        None => format!("this site holds no replica of {db}/{shard}"),
    }
}

/// Whether this site's replica of `(db, shard)` serves reads (ready or handing over).
pub fn readable(inv: &Inventory, db: &DbName, shard: u32) -> Result<Result<(), String>, InventoryError> {
    Ok(match inv.replica(db, shard)?.map(|r| r.state) {
        Some(
            ReplicaState::Ready
            | ReplicaState::HandingOver { .. }
            | ReplicaState::Following { caught_up: true },
        ) => Ok(()),
        Some(ReplicaState::CatchingUp { .. }) => {
            Err(format!("the replica of {db}/{shard} here is catching up"))
        }
        Some(ReplicaState::Following { caught_up: false }) => {
            Err(format!("the copy of {db}/{shard} here is still catching up"))
        }
        None => Err(format!("this site holds no replica of {db}/{shard}")),
    })
}

/// The live sites other than `me` with a ready replica of `(db, shard)`, by the view.
pub fn ready_holders(view: &ClusterView, me: SiteId, db: &DbName, shard: u32) -> Vec<SocketAddr> {
    let Some(placement) = view.db(db).and_then(|d| d.placement.get(shard as usize)) else {
        return Vec::new();
    };
    placement
        .replicas
        .iter()
        .filter(|r| r.is_ready() && r.site_id != me && view.is_live(r.site_id))
        .filter_map(|r| view.site(r.site_id)?.addr.parse().ok())
        .collect()
}

/// Reads a page of the local log: at most `max` entries and about [`MAX_READ_BYTES`].
pub fn read_page(
    inv: &Inventory,
    db: &DbName,
    shard: u32,
    from: u64,
    max: u32,
) -> Result<Response, InventoryError> {
    let max = max.clamp(1, MAX_READ_ENTRIES) as usize;
    let start = inv.log_start(db, shard)?;
    let batch = inv.read_log_within(db, shard, from, max, MAX_READ_BYTES)?;
    let next = batch.next.max(from);
    let entries =
        batch.entries.into_iter().map(|e| ReadEntry { arrival: e.arrival, entry: e.entry }).collect();
    Ok(Response::Entries { entries, next, start })
}
