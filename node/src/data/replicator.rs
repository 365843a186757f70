//! Keeping this site's replicas filled from the other replicas of their shards.
//!
//! Every `reconcile_every` (and on each view change) the replicator works out which
//! pull streams should run — for a replica catching up, one from each upstream it has
//! reached plus the first live one it has not (one upstream copied at a time, so the
//! data crosses the network once); for a ready (or handing-over) replica, one from every
//! other live site with a ready or handing-over replica of the shard — starts the
//! missing ones and stops the rest. Each stream resumes from the stored frontier and cursor, so a stream cut at any
//! point (upstream killed, connection lost, this site killed) continues where it was:
//! nothing copied twice, nothing missed.
//!
//! A catching-up replica turns ready once, for each of its upstreams, it holds what that
//! upstream held when its stream started — or the upstream is dead or gone from the
//! cluster (at least one upstream must have been copied). Then it follows like any
//! ready replica. An upstream that has since handed the shard over is passed over; if
//! none is left, the shard's current holders stand in ([`catch_up_from`]).
//!
//! A replicant's copy (`following`) pulls from one live core replica of the shard, ready
//! or handing over — chosen by a hash of the replicant, the shard and the holder, so
//! replicants spread over the holders and keep theirs while it stays — and switches when
//! that one goes, resuming from its frontier. It counts as caught up (serves reads) once
//! it holds what its first upstream held when the stream started.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cairn_gossip::summary::CatchUpProgress;
use cairn_gossip::{ClusterView, SiteState};
use cairn_inventory::{
    DbName, InsertOutcome, Inventory, InventoryError, ReplicaRecord, ReplicaState, SiteId,
};
use cairn_transport::pull::STOP_BAD_BATCH;
use cairn_transport::{DataCounters, Endpoint, PullFrame, PullRequest, PullStart, TransportError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::DataConfig;
use super::admission::Admission;
use super::signals::LogSignals;
use super::throttle::Throttle;

/// What the data path shares between the service (writes, upstream streams), the
/// replicator and the publisher (progress).
#[derive(Debug)]
pub struct DataShared {
    /// Settings.
    pub config: DataConfig,
    /// Log growth signals.
    pub signals: Arc<LogSignals>,
    throttle: Option<Throttle>,
    progress: Mutex<HashMap<(DbName, u32), Progress>>,
    counters: Counters,
    /// Wakes the replicator before its next tick (a replica added, an upstream reached).
    pub wake: Arc<tokio::sync::Notify>,
    /// Pull streams served, per peer and in all.
    pub pulls: Arc<Admission>,
    /// KiB of pull batches read and not yet sent, per peer and in all.
    pub pull_budget: Arc<Admission>,
    /// Reads being answered, per peer and in all.
    pub reads: Arc<Admission>,
    /// Long polls and acknowledgement waits in progress.
    pub waits: Arc<Admission>,
    /// Subscriptions served.
    pub subscriptions: Arc<Admission>,
    /// What other replicas acknowledged holding (for `--ack quorum|all`).
    pub acks: Arc<super::acks::AckBoard>,
    /// Inventory reads of served pull streams running at once.
    pub pull_io: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    duplicates: AtomicU64,
    bytes: AtomicU64,
    refused_batches: AtomicU64,
    streams_opened: AtomicU64,
}

/// A catching-up replica's progress.
#[derive(Debug, Default)]
struct Progress {
    /// What each upstream held when its stream (re)started: entries, bytes.
    targets: HashMap<SiteId, (u64, u64)>,
    /// Upstreams whose `Start` position is held.
    reached: HashSet<SiteId>,
    received_entries: u64,
    received_bytes: u64,
    /// (when, received bytes then), over the last seconds — and the last one before
    /// them, so a slow stream whose batches come further apart than the window still
    /// has a rate.
    samples: VecDeque<(Instant, u64)>,
}

/// Inventory reads of served pull streams at once (each holds a blocking thread).
const PULL_IO: usize = 4;

/// The rate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Progress {
    fn published(&self, held_bytes: u64) -> CatchUpProgress {
        let (target_entries, target_bytes) =
            self.targets.values().fold((0, 0), |(e, b), (te, tb)| (e.max(*te), b.max(*tb)));
        // Up to now, so a stalled stream's rate falls.
        let now = Instant::now();
        let rate = match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((_, b1))) if now > *t0 => {
                ((b1 - b0) as f64 / now.duration_since(*t0).as_secs_f64()) as u64
            }
            _ => 0,
        };
        let left = target_bytes.saturating_sub(held_bytes);
        CatchUpProgress {
            received_entries: self.received_entries,
            received_bytes: self.received_bytes,
            target_entries,
            target_bytes,
            rate_bytes_per_s: rate,
            eta_s: (rate > 0).then(|| left.div_ceil(rate)),
        }
    }
}

impl DataShared {
    /// The shared state for `config`.
    pub fn new(config: DataConfig) -> Self {
        Self {
            config,
            signals: Arc::default(),
            throttle: config.catch_up_limit.map(Throttle::new),
            progress: Mutex::default(),
            counters: Counters::default(),
            wake: Arc::default(),
            pulls: Admission::new("pull streams", config.max_pulls_per_peer, config.max_pulls),
            pull_budget: Admission::new(
                "KiB of pull batches in flight",
                config.pull_bytes_per_peer.div_ceil(1024),
                config.pull_bytes.div_ceil(1024),
            ),
            reads: Admission::new("reads in progress", config.max_reads_per_peer, config.max_reads),
            waits: Admission::new("waits in progress", config.max_waits_per_peer, config.max_waits),
            subscriptions: Admission::new(
                "subscriptions",
                config.max_subscriptions_per_peer,
                config.max_subscriptions,
            ),
            acks: Arc::default(),
            pull_io: Arc::new(tokio::sync::Semaphore::new(PULL_IO)),
        }
    }

    /// The progress to publish for a catching-up replica holding `held_bytes`.
    pub fn progress(&self, db: &DbName, shard: u32, held_bytes: u64) -> Option<CatchUpProgress> {
        let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress.get(&(db.clone(), shard)).map(|p| p.published(held_bytes))
    }

    /// Totals so far.
    pub fn counters(&self) -> DataCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DataCounters {
            batches: get(&c.batches),
            entries: get(&c.entries),
            duplicates: get(&c.duplicates),
            bytes: get(&c.bytes),
            refused_batches: get(&c.refused_batches),
            streams_opened: get(&c.streams_opened),
        }
    }

    fn with_progress<R>(&self, db: &DbName, shard: u32, f: impl FnOnce(&mut Progress) -> R) -> Option<R> {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress.get_mut(&(db.clone(), shard)).map(f)
    }
}

/// One pull stream the replicator should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The upstream site.
    pub site: SiteId,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether the local replica is catching up (the stream is throttled).
    pub catching_up: bool,
}

/// The pull streams `me` should run for `replicas`, by the view (pure). A catching-up
/// replica copies from one upstream at a time — the upstreams it has `reached` keep
/// streaming what is new, plus the first live one not reached yet — so its data crosses
/// the network once rather than once per upstream: each next upstream is asked only
/// for what lies beyond the frontier the earlier ones brought.
pub fn sources(
    me: SiteId,
    replicas: &[ReplicaRecord],
    view: &ClusterView,
    reached: impl Fn(&DbName, u32) -> HashSet<SiteId>,
) -> BTreeMap<(DbName, u32, SiteId), Source> {
    let addr = |site: SiteId| -> Option<SocketAddr> {
        let s = view.site(site)?;
        (s.state == SiteState::Live).then(|| s.addr.parse().ok())?
    };
    let mut out = BTreeMap::new();
    for r in replicas {
        let (sites, catching_up): (Vec<SiteId>, bool) = match &r.state {
            ReplicaState::CatchingUp { upstreams } => {
                let upstreams = catch_up_from(me, &r.db, r.shard, upstreams, view);
                let done = reached(&r.db, r.shard);
                let live = |u: &&SiteId| **u != me && addr(**u).is_some();
                let next = upstreams.iter().filter(live).find(|u| !done.contains(u));
                let sites = upstreams.iter().filter(|u| done.contains(u)).chain(next).copied().collect();
                (sites, true)
            }
            ReplicaState::Ready | ReplicaState::HandingOver { .. } => (holders(view, &r.db, r.shard), false),
            ReplicaState::Following { caught_up } => {
                let live: Vec<SiteId> = holders(view, &r.db, r.shard)
                    .into_iter()
                    .filter(|s| *s != me && addr(*s).is_some())
                    .collect();
                let chosen = live.into_iter().max_by_key(|holder| follow_rank(me, &r.db, r.shard, *holder));
                (chosen.into_iter().collect(), !caught_up)
            }
        };
        for site in sites.into_iter().filter(|s| *s != me) {
            if let Some(addr) = addr(site) {
                out.insert((r.db.clone(), r.shard, site), Source { site, addr, catching_up });
            }
        }
    }
    out
}

/// The sites holding a ready or handing-over replica of `db`/`shard`, by the view.
fn holders(view: &ClusterView, db: &DbName, shard: u32) -> Vec<SiteId> {
    let Some(placement) = view.db(db).and_then(|d| d.placement.get(shard as usize)) else {
        return Vec::new();
    };
    placement.replicas.iter().filter(|x| x.is_complete()).map(|x| x.site_id).collect()
}

/// Rendezvous hash: a follower pulls from the holder ranked highest, so each follower
/// keeps its holder as long as that one stays, and followers spread over the holders.
fn follow_rank(me: SiteId, db: &DbName, shard: u32, holder: SiteId) -> u128 {
    let parts: [&[u8]; 4] =
        [&me.0.to_be_bytes(), db.as_str().as_bytes(), &shard.to_be_bytes(), &holder.0.to_be_bytes()];
    crate::planner::stable_hash(&parts)
}

/// Where a replica of `db`/`shard` catching up from `upstreams` copies from, by the view
/// (pure): its upstreams, less those the view shows live but no longer holding the shard
/// whole (they handed it over after the plan was made: what they held is with the
/// shard's holders now, and they would only answer "not here"); when no live upstream is
/// left, the shard's live complete holders instead. Without this a catch-up planned from
/// a replica that then moved waits for ever.
pub fn catch_up_from(
    me: SiteId,
    db: &DbName,
    shard: u32,
    upstreams: &[SiteId],
    view: &ClusterView,
) -> Vec<SiteId> {
    let holding = holders(view, db, shard);
    let kept: Vec<SiteId> = upstreams
        .iter()
        .copied()
        .filter(|u| *u != me && (holding.contains(u) || !view.is_live(*u)))
        .collect();
    if kept.iter().any(|u| view.is_live(*u)) {
        return kept;
    }
    let instead = holding.into_iter().filter(|h| *h != me && view.is_live(*h) && !kept.contains(h));
    kept.iter().copied().chain(instead).collect()
}

/// Whether a replica catching up from `upstreams` may turn ready: every upstream is
/// either copied up to its start position (`reached`) or known dead or gone, and at
/// least one was copied (pure).
pub fn caught_up(me: SiteId, upstreams: &[SiteId], reached: &HashSet<SiteId>, view: &ClusterView) -> bool {
    let others: Vec<SiteId> = upstreams.iter().copied().filter(|u| *u != me).collect();
    let settled = |u: &SiteId| {
        reached.contains(u)
            || view.site(*u).is_some_and(|s| matches!(s.state, SiteState::Dead | SiteState::Left))
    };
    others.iter().all(settled) && others.iter().any(|u| reached.contains(u))
}

/// Runs the replicator until the task is dropped.
pub async fn run(
    shared: Arc<DataShared>,
    inventory: Arc<Inventory>,
    endpoint: Endpoint,
    mut view: watch::Receiver<Arc<ClusterView>>,
) {
    let me = inventory.identity().site_id;
    let mut streams: HashMap<(DbName, u32, SiteId), (Source, JoinHandle<()>)> = HashMap::new();
    let mut ticker = tokio::time::interval(shared.config.reconcile_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The replicas as of a number of inventory commits.
    let mut read: Option<(u64, Vec<ReplicaRecord>)> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shared.wake.notified() => {}
            changed = view.changed() => if changed.is_err() { return },
        }
        let current = view.borrow_and_update().clone();
        // Read again only after a commit (counted before the read, so a racing commit
        // makes the next round read again).
        let commits = inventory.commits();
        let replicas = match read.take() {
            Some((seen, replicas)) if seen == commits => replicas,
            _ => {
                let inv = inventory.clone();
                match crate::supervisor::blocking(move || inv.replicas(None)).await {
                    Ok(replicas) => replicas,
                    Err(error) => {
                        tracing::warn!(%error, "replicator cannot read the replicas; retrying");
                        continue;
                    }
                }
            }
        };
        read = Some((commits, replicas.clone()));
        finish_catch_ups(&shared, &inventory, me, &replicas, &current).await;
        let reached = |db: &DbName, shard: u32| {
            shared.with_progress(db, shard, |p| p.reached.clone()).unwrap_or_default()
        };
        let wanted = sources(me, &replicas, &current, reached);
        streams.retain(|key, (source, task)| {
            let keep = wanted.get(key) == Some(source) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, source) in wanted {
            if streams.contains_key(&key) {
                continue;
            }
            let (db, shard, _) = key.clone();
            let ctx = StreamCtx {
                shared: shared.clone(),
                inventory: inventory.clone(),
                endpoint: endpoint.clone(),
                me,
                db,
                shard,
                source,
            };
            streams.insert(key, (source, tokio::spawn(pull_loop(ctx))));
        }
    }
}

/// Turns ready the catching-up replicas that are done (and caught up the followers that
/// reached their upstream), and keeps progress entries for exactly the replicas still
/// catching up.
async fn finish_catch_ups(
    shared: &DataShared,
    inventory: &Arc<Inventory>,
    me: SiteId,
    replicas: &[ReplicaRecord],
    view: &ClusterView,
) {
    let mut done = Vec::new();
    {
        let mut progress = shared.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let catching: HashSet<(DbName, u32)> = replicas
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    ReplicaState::CatchingUp { .. } | ReplicaState::Following { caught_up: false }
                )
            })
            .map(|r| (r.db.clone(), r.shard))
            .collect();
        progress.retain(|key, _| catching.contains(key));
        for r in replicas {
            if !catching.contains(&(r.db.clone(), r.shard)) {
                continue;
            }
            let reached = &progress.entry((r.db.clone(), r.shard)).or_default().reached;
            let done_now = match &r.state {
                ReplicaState::CatchingUp { upstreams } => {
                    caught_up(me, &catch_up_from(me, &r.db, r.shard, upstreams, view), reached, view)
                }
                _ => !reached.is_empty(),
            };
            if done_now {
                done.push(r.clone());
            }
        }
    }
    for r in done {
        let inv = inventory.clone();
        let (db, shard, state) = (r.db.clone(), r.shard, r.state.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<bool, InventoryError> {
            // Only if nothing changed it meanwhile (a plan, a removal).
            match inv.replica(&db, shard)? {
                Some(now) if now.state == state => {
                    let next = match state {
                        ReplicaState::Following { .. } => ReplicaState::Following { caught_up: true },
                        _ => ReplicaState::Ready,
                    };
                    inv.set_replica(&db, shard, next)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await;
        match result {
            Ok(Ok(true)) => {
                shared
                    .progress
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(r.db.clone(), r.shard));
                tracing::info!(db = %r.db, shard = r.shard, following = matches!(r.state, ReplicaState::Following { .. }),
                    "replica caught up");
            }
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(db = %r.db, shard = r.shard, %error, "cannot mark replica ready")
            }
            Err(_) => {}
        }
    }
}

struct StreamCtx {
    shared: Arc<DataShared>,
    inventory: Arc<Inventory>,
    endpoint: Endpoint,
    me: SiteId,
    db: DbName,
    shard: u32,
    source: Source,
}

/// Why a pull stream ended.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("upstream refused: {0}")]
    Refused(String),
    #[error("bad batch refused: {0}")]
    BadBatch(cairn_transport::BatchError),
    #[error("upstream silent for {0:?}")]
    Silent(Duration),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Pulls from one upstream, reconnecting with backoff, until aborted.
async fn pull_loop(ctx: StreamCtx) {
    const FIRST: Duration = Duration::from_millis(200);
    let mut backoff = FIRST;
    loop {
        match pull_once(&ctx).await {
            Ok(()) => backoff = FIRST,
            Err(PullError::BadBatch(error)) => {
                tracing::warn!(db = %ctx.db, shard = ctx.shard, upstream = %ctx.source.addr, %error,
                    "refused a bad batch; pulling it again");
                backoff = FIRST;
            }
            Err(error) => {
                tracing::debug!(db = %ctx.db, shard = ctx.shard, upstream = %ctx.source.addr, %error, "pull stream ended");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl StreamCtx {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inventory, &DbName, u32) -> Result<T, InventoryError> + Send + 'static,
    ) -> Result<T, PullError> {
        let (inv, db, shard) = (self.inventory.clone(), self.db.clone(), self.shard);
        match tokio::task::spawn_blocking(move || f(&inv, &db, shard)).await {
            Ok(result) => Ok(result?),
            Err(join) => Err(PullError::Protocol(format!("inventory task: {join}"))),
        }
    }

    /// Marks the upstream's start position as held: everything it held then, we hold
    /// (entries it dropped by retention count as held, as they do there).
    async fn reach(&self, start: &PullStart) -> Result<(), PullError> {
        tracing::debug!(db = %self.db, shard = self.shard, upstream = %self.source.site.short(),
            next_arrival = start.next_arrival, entries = start.entries, "upstream's start position held");
        let frontier = start.frontier.clone();
        self.blocking(move |inv, db, shard| inv.raise_frontier(db, shard, &frontier)).await?;
        let site = self.source.site;
        self.shared.with_progress(&self.db, self.shard, |p| p.reached.insert(site));
        self.shared.wake.notify_one();
        Ok(())
    }
}

/// The next frame, or [`PullError::Silent`] once no byte has come for `silence` (a
/// large batch on a slow path may take far longer than that, and still be arriving).
async fn next_frame(
    stream: &mut cairn_transport::PullReceiver,
    silence: Duration,
) -> Result<Option<PullFrame>, PullError> {
    match stream.next_within(silence).await {
        Err(TransportError::Timeout { .. }) => Err(PullError::Silent(silence)),
        frame => Ok(frame?),
    }
}

async fn pull_once(ctx: &StreamCtx) -> Result<(), PullError> {
    let upstream = ctx.source.site;
    let (frontier, cursor, own_seq) = ctx
        .blocking(move |inv, db, shard| {
            Ok((
                inv.frontier(db, shard)?,
                inv.pull_cursor(db, shard, upstream)?,
                inv.log_stats(db, shard)?.own_seq,
            ))
        })
        .await?;
    let request = PullRequest {
        db: ctx.db.clone(),
        shard: ctx.shard,
        frontier,
        cursor,
        follow: true,
        receiver: ctx.me,
        receiver_own_seq: own_seq,
    };
    let silence = ctx.shared.config.idle_every * 3;
    let mut stream = ctx.endpoint.pull(ctx.source.addr, &request).await?;
    let acks = stream.take_acks();
    ctx.shared.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
    let start = match next_frame(&mut stream, silence).await? {
        Some(PullFrame::Start(start)) => start,
        Some(PullFrame::Refused { reason }) => return Err(PullError::Refused(reason)),
        Some(other) => return Err(PullError::Protocol(format!("expected a start frame, got {other:?}"))),
        None => return Err(PullError::Protocol("stream ended before its start frame".into())),
    };
    if start.site != upstream {
        return Err(PullError::Protocol(format!(
            "{} is site {}, not {}",
            ctx.source.addr,
            start.site.short(),
            upstream.short()
        )));
    }
    ctx.shared.with_progress(&ctx.db, ctx.shard, |p| {
        p.targets.insert(upstream, (start.entries, start.bytes));
    });
    tracing::debug!(db = %ctx.db, shard = ctx.shard, upstream = %upstream.short(), cursor,
        next_arrival = start.next_arrival, entries = start.entries, catching_up = ctx.source.catching_up, "pull stream started");
    let mut reached = cursor >= start.next_arrival;
    if reached {
        ctx.reach(&start).await?;
    }
    // Batches are written to the log by `writer` while the next are received and
    // checked; batches that queued up while a write ran go into the next transaction
    // together (fewer, larger commits when the disk is the bottleneck).
    let (to_writer, mut batches) = tokio::sync::mpsc::channel::<Received>(QUEUED_BATCHES);
    let writer = async {
        let mut cursor_saved = Instant::now();
        while let Some(mut batch) = batches.recv().await {
            while batch.bytes < MAX_TXN_BYTES
                && let Ok(more) = batches.try_recv()
            {
                batch.entries.extend(more.entries);
                batch.bytes += more.bytes;
                batch.cursor = more.cursor;
            }
            let save_cursor = cursor_saved.elapsed() >= SAVE_CURSOR_EVERY;
            if ctx.store(batch, &start, &mut reached, save_cursor).await? {
                cursor_saved = Instant::now();
            }
        }
        Ok::<(), PullError>(())
    };
    let receiver = async move {
        loop {
            let frame = tokio::select! {
                frame = next_frame(&mut stream, silence) => frame?,
                () = to_writer.closed() => return Ok(()),
            };
            let batch = match frame {
                None => return Ok(()),
                Some(PullFrame::Idle { .. }) => continue,
                Some(PullFrame::Batch(batch)) => batch,
                Some(other) => return Err(PullError::Protocol(format!("unexpected frame {other:?}"))),
            };
            let entries = match batch.open() {
                Ok(entries) => entries,
                Err(error) => {
                    ctx.shared.counters.refused_batches.fetch_add(1, Ordering::Relaxed);
                    stream.stop(STOP_BAD_BATCH);
                    return Err(PullError::BadBatch(error));
                }
            };
            let bytes: u64 = entries.iter().map(|e| e.payload.len() as u64).sum();
            if ctx.source.catching_up
                && let Some(throttle) = &ctx.shared.throttle
            {
                tokio::time::sleep(throttle.take(bytes as usize)).await;
            }
            let received = Received { entries, bytes, cursor: batch.next };
            if to_writer.send(received).await.is_err() {
                return Ok(());
            }
        }
    };
    // The writer ends once the receiver has ended and every received batch is stored, or
    // at its first error (which then ends the receiver). The acknowledgements go on
    // beside them for as long as the stream lasts.
    let streaming = async {
        let (received, written) = tokio::join!(receiver, writer);
        written.and(received)
    };
    tokio::select! {
        result = streaming => result,
        () = acknowledge(ctx, acks) => unreachable!("acknowledging never ends"),
    }
}

/// Tells the upstream, now and whenever this replica's log of the shard grows (by this
/// stream, another one, or a local write), the frontier it holds durably: writers
/// waiting there for `--ack quorum|all` count it. A failed send ends only the
/// acknowledgements, never the stream.
async fn acknowledge(ctx: &StreamCtx, acks: Option<cairn_transport::PullAckSender>) {
    if let Some(mut sender) = acks {
        let mut grew = ctx.shared.signals.subscribe(&ctx.db, ctx.shard);
        loop {
            grew.borrow_and_update();
            let Ok(held) = ctx.blocking(|inv, db, shard| inv.frontier(db, shard)).await else { break };
            if sender.send(&cairn_transport::PullAck { held }).await.is_err() || grew.changed().await.is_err()
            {
                break;
            }
        }
    }
    std::future::pending::<()>().await
}

/// Received batches waiting for the writer.
const QUEUED_BATCHES: usize = 16;
/// A batch that brings nothing new (every entry already came by another replica's
/// stream, as most do when every replica pulls from every other) is not committed; its
/// stream's cursor is saved with the next batch that brings something, or with one
/// that brings nothing once this long has passed since the last save. A cursor saved
/// late only makes a restarted stream send again entries that are then ignored.
const SAVE_CURSOR_EVERY: Duration = Duration::from_secs(2);
/// Queued batches are merged into one transaction up to about this many payload bytes.
const MAX_TXN_BYTES: u64 = 8 << 20;

/// A received, checked batch (or several, merged).
struct Received {
    entries: Vec<cairn_inventory::Entry>,
    bytes: u64,
    cursor: u64,
}

impl StreamCtx {
    /// Stores a batch with its cursor, counts it and notes an upstream reached. A batch
    /// this log holds all of already is only committed (to save the cursor) when
    /// `save_cursor`. Answers whether the cursor was saved.
    async fn store(
        &self,
        batch: Received,
        start: &PullStart,
        reached: &mut bool,
        save_cursor: bool,
    ) -> Result<bool, PullError> {
        let (count, bytes, cursor) = (batch.entries.len() as u64, batch.bytes, batch.cursor);
        let upstream = self.source.site;
        let stored = self
            .blocking(move |inv, db, shard| {
                if !save_cursor && inv.holds_all(db, shard, batch.entries.iter().map(|e| e.id))? {
                    return Ok(None);
                }
                inv.insert_pulled(db, shard, &batch.entries, Some((upstream, cursor))).map(Some)
            })
            .await?;
        let saved = stored.is_some();
        let outcome = stored.unwrap_or(InsertOutcome { inserted: 0, duplicates: count });
        if outcome.inserted > 0 {
            self.shared.signals.notify(&self.db, self.shard);
        }
        let c = &self.shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.entries.fetch_add(count, Ordering::Relaxed);
        c.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.shared.with_progress(&self.db, self.shard, |p| {
            p.received_entries += count;
            p.received_bytes += bytes;
            let now = Instant::now();
            p.samples.push_back((now, p.received_bytes));
            while p.samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
                p.samples.pop_front();
            }
        });
        if !*reached && cursor >= start.next_arrival {
            self.reach(start).await?;
            *reached = true;
        }
        Ok(saved)
    }
}
