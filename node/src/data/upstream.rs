//! Serving pull streams: the upstream side of catch-up and follow.
//!
//! The stream starts with what this replica holds (`Start`), then sends, in this site's
//! arrival order from the receiver's cursor, every entry the receiver lacks: those above
//! its frontier, except its own entries written after it asked (it holds those; its
//! entries this replica held when the stream started are not among them). A
//! follow stream then waits for the log to grow and pushes what is new; when there is
//! nothing to say for a while it sends `Idle`, so the receiver can tell a quiet upstream
//! from a dead one.
//!
//! A blocking reader thread reads and seals batches up to the log's end, a few batches
//! ahead of the network, so LMDB reads, encoding and checksums overlap the sending.

use std::sync::Arc;

use cairn_inventory::{Inventory, InventoryError, PullLimits};
use cairn_transport::{PullFrame, PullRequest, PullSender, PullStart, SealedBatch};

use super::DataConfig;
use super::signals::LogSignals;

/// Serves one pull stream until it is done or the receiver goes away.
pub async fn serve(
    inventory: Arc<Inventory>,
    signals: Arc<LogSignals>,
    config: DataConfig,
    request: PullRequest,
    mut out: PullSender,
) {
    let peer = out.peer();
    let (db, shard) = (request.db.clone(), request.shard);
    match stream(&inventory, &signals, config, &request, &mut out).await {
        Ok(()) => out.finish(),
        Err(StreamEnd::Receiver(error)) => {
            tracing::debug!(%peer, %db, shard, %error, "pull stream ended by the receiver");
        }
        Err(StreamEnd::Inventory(error)) => {
            tracing::warn!(%peer, %db, shard, %error, "pull stream failed reading the log");
            let reason = format!("the upstream cannot read its log: {error}");
            let _ = out.send(&PullFrame::Refused { reason }).await;
            out.finish();
        }
    }
}

enum StreamEnd {
    Receiver(cairn_transport::TransportError),
    Inventory(InventoryError),
}

async fn blocking<T: Send + 'static>(
    inventory: &Arc<Inventory>,
    f: impl FnOnce(&Inventory) -> Result<T, InventoryError> + Send + 'static,
) -> Result<T, StreamEnd> {
    let inv = inventory.clone();
    match tokio::task::spawn_blocking(move || f(&inv)).await {
        Ok(result) => result.map_err(StreamEnd::Inventory),
        Err(join) => Err(task_failed(join)),
    }
}

fn task_failed(join: tokio::task::JoinError) -> StreamEnd {
    StreamEnd::Inventory(InventoryError::InvalidSetting { what: "pull task", why: join.to_string() })
}

async fn stream(
    inventory: &Arc<Inventory>,
    signals: &LogSignals,
    config: DataConfig,
    request: &PullRequest,
    out: &mut PullSender,
) -> Result<(), StreamEnd> {
    let (db, shard) = (request.db.clone(), request.shard);
    let mut grew = signals.subscribe(&db, shard);
    let (d, s) = (db.clone(), shard);
    // Pulls are served by the replicas that serve reads (ready or handing over).
    let checked = blocking(inventory, move |inv| match super::access::readable(inv, &d, s)? {
        Ok(()) => Ok(Ok(inv.log_position(&d, s)?)),
        Err(reason) => Ok(Err(reason)),
    })
    .await?;
    let (frontier, stats) = match checked {
        Ok(position) => position,
        Err(reason) => {
            out.send(&PullFrame::Refused { reason }).await.map_err(StreamEnd::Receiver)?;
            return Ok(());
        }
    };
    // The receiver's own entries we already hold were written before it asked, so they
    // are never "newer than the request", whatever its counter says: a site rebuilt from
    // a lost inventory (`cairn import`) asks with a counter of 0 and gets them back.
    let receiver_own = request.receiver_own_seq.max(frontier.get(request.receiver));
    let start = PullStart {
        site: inventory.identity().site_id,
        frontier,
        next_arrival: stats.next_arrival,
        entries: stats.entries,
        bytes: stats.bytes,
    };
    out.send(&PullFrame::Start(start)).await.map_err(StreamEnd::Receiver)?;
    // A cursor from beyond our log's end cannot be ours (a log rebuilt elsewhere): scan all.
    let cursor = if request.cursor > stats.next_arrival { 0 } else { request.cursor };
    let mut scan = Scan {
        cursor,
        told: cursor,
        start_arrival: stats.next_arrival,
        theirs: request.frontier.clone(),
        receiver: request.receiver,
        receiver_own,
        limits: PullLimits {
            max_entries: config.batch_entries,
            max_bytes: config.batch_bytes,
            max_scanned: config.batch_entries * 4,
        },
    };
    loop {
        // A reader thread reads and seals batches up to the log's end, up to
        // READ_AHEAD batches ahead of the network.
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let (inv, d) = (inventory.clone(), db.clone());
        let reader =
            tokio::task::spawn_blocking(move || scan.read_to_end(&inv, &d, shard, &tx).map(|()| scan));
        while let Some(batch) = rx.recv().await {
            out.send(&PullFrame::Batch(batch)).await.map_err(StreamEnd::Receiver)?;
        }
        scan = match reader.await {
            Ok(result) => result?,
            Err(join) => return Err(task_failed(join)),
        };
        // Everything held so far is sent.
        if !request.follow {
            return Ok(());
        }
        tokio::select! {
            changed = grew.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(config.idle_every) => {
                let d = db.clone();
                let (frontier, stats) = blocking(inventory, move |inv| inv.log_position(&d, shard)).await?;
                let idle = PullFrame::Idle { frontier, next_arrival: stats.next_arrival };
                out.send(&idle).await.map_err(StreamEnd::Receiver)?;
            }
            () = out.stopped() => return Ok(()),
        }
    }
}

/// Batches sealed ahead of the one being sent.
const READ_AHEAD: usize = 4;

/// Where a stream's scan of the log stands.
struct Scan {
    /// The next arrival number to read.
    cursor: u64,
    /// The cursor the receiver last got.
    told: u64,
    /// Our log's next arrival number when the stream started.
    start_arrival: u64,
    /// The receiver's frontier when it asked.
    theirs: cairn_inventory::Frontier,
    receiver: cairn_inventory::SiteId,
    receiver_own: u64,
    limits: PullLimits,
}

impl Scan {
    /// Reads, seals and queues batches from the cursor to the log's end (blocking). Stops
    /// early, without error, when the stream's sender is gone.
    fn read_to_end(
        &mut self,
        inv: &Inventory,
        db: &cairn_inventory::DbName,
        shard: u32,
        tx: &tokio::sync::mpsc::Sender<SealedBatch>,
    ) -> Result<(), StreamEnd> {
        let (theirs, receiver, receiver_own) = (&self.theirs, self.receiver, self.receiver_own);
        loop {
            let (entries, next) = inv
                .read_beyond(
                    db,
                    shard,
                    self.cursor,
                    // Their own entries above what they had written when they asked
                    // are entries they wrote since: they hold them.
                    |id| id.seq > theirs.get(id.origin) && !(id.origin == receiver && id.seq > receiver_own),
                    self.limits,
                )
                .map_err(StreamEnd::Inventory)?;
            if next <= self.cursor {
                return Ok(());
            }
            self.cursor = next;
            // A batch with no entries only moves the receiver's cursor (a write there):
            // sent when it reaches what we held at the start (the receiver then has
            // caught up with us), and otherwise only every so often, so that a resumed
            // stream rescans little.
            let reaches_start = self.told < self.start_arrival && next >= self.start_arrival;
            if !entries.is_empty() || reaches_start || next - self.told >= self.limits.max_scanned as u64 {
                let batch = SealedBatch::seal(&entries, next).map_err(StreamEnd::Receiver)?;
                if tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
                self.told = next;
            }
        }
    }
}
