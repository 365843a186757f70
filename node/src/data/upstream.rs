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
//! Each batch is read and sealed by a short task on the blocking pool while the one
//! before it is sent, so reading overlaps sending but no thread waits on the network.
//! What a receiver can cost is bounded: bytes of batches read and not yet sent come from
//! a per-peer and a site-wide budget ([`Admission`]) — a stream waits for room before it
//! reads more — and a receiver that takes no byte for `pull_stall` loses its stream.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use cairn_inventory::{Inventory, InventoryError, PullLimits};
use cairn_transport::{PullFrame, PullRequest, PullSender, PullStart, SealedBatch, TransportError};

use super::DataConfig;
use super::admission::{Admission, Ticket};
use super::signals::LogSignals;

/// What a served stream draws on.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The site's inventory.
    pub inventory: Arc<Inventory>,
    /// Log growth signals (follow streams wait on them).
    pub signals: Arc<LogSignals>,
    /// Stream settings.
    pub config: DataConfig,
    /// The byte budget for batches in flight (units: KiB).
    pub budget: Arc<Admission>,
    /// Permits to run an inventory read for a pull stream: few at once, so a burst of
    /// streams does not grow the blocking pool (each thread costs a stack).
    pub io: Arc<Semaphore>,
    /// Where the receiver's acknowledgements are recorded.
    pub acks: Arc<super::acks::AckBoard>,
}

/// Serves one pull stream until it is done or the receiver goes away.
pub async fn serve(serving: Serving, request: PullRequest, mut out: PullSender) {
    let peer = out.peer();
    let (db, shard) = (request.db.clone(), request.shard);
    // The receiver's acknowledgements, for as long as the stream lasts. They are
    // believed for the receiver the request names (a member of the cluster).
    let acks = out.take_acks().map(|mut acks| {
        let (board, db, receiver) = (serving.acks.clone(), db.clone(), request.receiver);
        tokio::spawn(async move {
            while let Ok(Some(ack)) = acks.next().await {
                board.record(&db, shard, receiver, &ack.held);
            }
        })
    });
    let _stop_acks = acks.map(AbortOnDrop);
    match stream(&serving, &request, &mut out).await {
        Ok(()) => out.finish(),
        Err(StreamEnd::Receiver(TransportError::Timeout { after, .. })) => {
            tracing::info!(%peer, %db, shard, ?after, "pull stream ended: the receiver stopped reading");
            out.reset(cairn_transport::pull::RESET_STALLED);
        }
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum StreamEnd {
    Receiver(TransportError),
    Inventory(InventoryError),
}

async fn blocking<T: Send + 'static>(
    serving: &Serving,
    f: impl FnOnce(&Inventory) -> Result<T, InventoryError> + Send + 'static,
) -> Result<T, StreamEnd> {
    let inv = serving.inventory.clone();
    let Ok(permit) = serving.io.clone().acquire_owned().await else {
        return Err(StreamEnd::Inventory(InventoryError::InvalidSetting {
            what: "pull reads",
            why: "closed".into(),
        }));
    };
    match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&inv)
    })
    .await
    {
        Ok(result) => result.map_err(StreamEnd::Inventory),
        Err(join) => Err(task_failed(join)),
    }
}

fn task_failed(join: tokio::task::JoinError) -> StreamEnd {
    StreamEnd::Inventory(InventoryError::InvalidSetting { what: "pull task", why: join.to_string() })
}

async fn stream(serving: &Serving, request: &PullRequest, out: &mut PullSender) -> Result<(), StreamEnd> {
    let (inventory, config) = (&serving.inventory, serving.config);
    let (db, shard) = (request.db.clone(), request.shard);
    let mut grew = serving.signals.subscribe(&db, shard);
    let (d, s) = (db.clone(), shard);
    // Pulls are served by the replicas that serve reads (ready or handing over).
    let checked = blocking(serving, move |inv| match super::access::readable(inv, &d, s)? {
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
    let stall = config.pull_stall;
    out.send_within(&PullFrame::Start(start), stall).await.map_err(StreamEnd::Receiver)?;
    // A cursor from beyond our log's end cannot be ours (a log rebuilt elsewhere): scan all.
    let cursor = if request.cursor > stats.next_arrival { 0 } else { request.cursor };
    let mut scan = Scan {
        db: db.clone(),
        shard,
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
    let batch_kib = config.batch_bytes.div_ceil(1024).max(1);
    loop {
        // Everything from the cursor to the log's end, the next batch read while one is
        // sent.
        let peer = out.peer();
        let mut reading = read_next(serving, peer, scan, batch_kib).await;
        scan = loop {
            let (returned, batch) = finish(reading).await?;
            let Some((batch, budget)) = batch else { break returned };
            // Read ahead only with budget free now: a stream holding a batch never waits
            // for budget (streams holding one each and waiting for more would never go on).
            let ahead = serving
                .budget
                .try_take(peer, batch_kib)
                .ok()
                .zip(serving.io.clone().try_acquire_owned().ok());
            match ahead {
                Some((ahead, permit)) => {
                    reading = start_read(serving, returned, ahead, permit);
                    out.send_within(&PullFrame::Batch(batch), stall).await.map_err(StreamEnd::Receiver)?;
                    drop(budget);
                }
                None => {
                    out.send_within(&PullFrame::Batch(batch), stall).await.map_err(StreamEnd::Receiver)?;
                    drop(budget);
                    reading = read_next(serving, peer, returned, batch_kib).await;
                }
            }
        };
        if !request.follow {
            return Ok(());
        }
        tokio::select! {
            changed = grew.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(config.idle_every) => {
                let d = db.clone();
                let (frontier, stats) = blocking(serving, move |inv| inv.log_position(&d, shard)).await?;
                let idle = PullFrame::Idle { frontier, next_arrival: stats.next_arrival };
                out.send_within(&idle, stall).await.map_err(StreamEnd::Receiver)?;
            }
            () = out.stopped() => return Ok(()),
        }
    }
}

/// A read of the next batch, under way on the blocking pool: the scan as it ends, and
/// the batch with the budget it holds (`None` at the log's end).
type Reading = tokio::task::JoinHandle<Result<(Scan, Option<(SealedBatch, Ticket)>), StreamEnd>>;

/// Takes budget for one batch (waiting for room), then starts reading it.
async fn read_next(serving: &Serving, peer: std::net::SocketAddr, scan: Scan, kib: usize) -> Reading {
    let budget = serving.budget.take(peer, kib).await;
    // The semaphore is never closed.
    let permit = serving.io.clone().acquire_owned().await.expect("open semaphore");
    start_read(serving, scan, budget, permit)
}

/// Starts reading the next batch with `budget` taken for it.
fn start_read(
    serving: &Serving,
    mut scan: Scan,
    mut budget: Ticket,
    permit: OwnedSemaphorePermit,
) -> Reading {
    let inv = serving.inventory.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let batch = scan.next_batch(&inv)?;
        // Hold only what the batch takes (a follow stream's are often tiny).
        if let Some(batch) = &batch {
            budget.shrink_to(batch.wire_bytes().div_ceil(1024).max(1));
        }
        Ok((scan, batch.map(|b| (b, budget))))
    })
}

/// The read's outcome.
async fn finish(reading: Reading) -> Result<(Scan, Option<(SealedBatch, Ticket)>), StreamEnd> {
    match reading.await {
        Ok(result) => result,
        Err(join) => Err(task_failed(join)),
    }
}

/// Where a stream's scan of the log stands.
#[derive(Debug)]
struct Scan {
    db: cairn_inventory::DbName,
    shard: u32,
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
    /// Reads and seals the next batch to send (blocking, bounded by the limits and by
    /// how many empty pages are skipped), or `None` at the log's end.
    fn next_batch(&mut self, inv: &Inventory) -> Result<Option<SealedBatch>, StreamEnd> {
        let (theirs, receiver, receiver_own) = (&self.theirs, self.receiver, self.receiver_own);
        loop {
            let (entries, next) = inv
                .read_beyond(
                    &self.db,
                    self.shard,
                    self.cursor,
                    // Their own entries above what they had written when they asked
                    // are entries they wrote since: they hold them.
                    |id| id.seq > theirs.get(id.origin) && !(id.origin == receiver && id.seq > receiver_own),
                    self.limits,
                )
                .map_err(StreamEnd::Inventory)?;
            if next <= self.cursor {
                return Ok(None);
            }
            self.cursor = next;
            // A batch with no entries only moves the receiver's cursor (a write there):
            // sent when it reaches what we held at the start (the receiver then has
            // caught up with us), and otherwise only every so often, so that a resumed
            // stream rescans little.
            let reaches_start = self.told < self.start_arrival && next >= self.start_arrival;
            if !entries.is_empty() || reaches_start || next - self.told >= self.limits.max_scanned as u64 {
                self.told = next;
                return SealedBatch::seal(&entries, next).map(Some).map_err(StreamEnd::Receiver);
            }
        }
    }
}
