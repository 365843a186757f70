//! Subscriptions: matching entries pushed as they arrive, one QUIC stream per shard,
//! within a credit window the reader grants as it takes entries.
//!
//! Each shard's subscription runs in its own task; when its site goes away, stops
//! holding the shard or falls silent, the task resumes it at another holder from the
//! last position it delivered — positions are valid on every replica, so nothing is
//! missed or repeated. The window is granted back only once a batch has been taken by
//! [`Subscription::next`], so a slow reader pauses the sites instead of filling memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use cairn_transport::{Endpoint, SubscribeRequest, SubscriptionFrame};
use cairn_types::{DbName, Entry, FetchStart, Frontier, OutOfRange, TopicFilter};
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::read::{Delivered, out_of_range};

/// A subscription that sends nothing (not even its idle frame) for this long is given
/// up and resumed elsewhere.
const SILENCE: Duration = Duration::from_secs(8);

/// What a subscription looks for.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Which topics (`#`, every topic, by default).
    pub filter: TopicFilter,
    /// Only entries stamped at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only this shard (default: every shard).
    pub shard: Option<u32>,
    /// Entries a site may send ahead of what the reader took, per shard (1-65,536).
    pub credit: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self { filter: TopicFilter::all(), since_ms: None, shard: None, credit: 1000 }
    }
}

/// What a shard's task hands over.
enum Event {
    Batch { shard: u32, entries: Vec<Entry>, cursor: Frontier, taken: oneshot::Sender<()> },
    Idle { shard: u32, cursor: Frontier },
    OutOfRange { shard: u32, gone: OutOfRange },
}

/// Entries of a db as they arrive, across shards (each shard in its order), from a
/// cursor on. Dropping it ends every shard's stream.
///
/// ```no_run
/// # async fn example(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
/// use cairn_client::{Cursor, SubscribeOptions, TopicFilter};
/// let options = SubscribeOptions { filter: TopicFilter::new("orders/#")?, ..Default::default() };
/// let mut subscription = client.subscribe(&"demo".parse()?, Cursor::default(), &options).await?;
/// while let Some(delivered) = subscription.next().await {
///     let delivered = delivered?;
///     println!("shard {}: {}", delivered.shard, delivered.entry.topic);
///     // Saved, `subscription.cursor()` resumes right after this entry, on any replica.
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<Event>,
    /// The batch being handed out, and the bell that grants its credit back.
    current: VecDeque<Delivered>,
    taken: Option<oneshot::Sender<()>>,
    /// The end of the current batch, once it is all handed out.
    batch_end: Option<(u32, Frontier)>,
    cursor: Cursor,
    tasks: tokio::task::JoinSet<()>,
    failed: bool,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Batch { shard, entries, .. } => {
                write!(f, "Batch(shard {shard}, {} entries)", entries.len())
            }
            Self::Idle { shard, .. } => write!(f, "Idle(shard {shard})"),
            Self::OutOfRange { shard, .. } => write!(f, "OutOfRange(shard {shard})"),
        }
    }
}

impl Client {
    /// Subscribes to `db` from `from`: every shard (or one), matching `options`.
    pub async fn subscribe(
        &self,
        db: &DbName,
        from: Cursor,
        options: &SubscribeOptions,
    ) -> Result<Subscription> {
        if !(1..=cairn_transport::MAX_CREDIT).contains(&options.credit) {
            return Err(Error::Invalid(format!("credit must be 1 to {}", cairn_transport::MAX_CREDIT)));
        }
        let routes = self.routes(db).await?;
        let shards = routes.settings.shards.get();
        if let Some(bad) = from.0.keys().find(|s| **s >= shards) {
            return Err(Error::Invalid(format!(
                "the cursor names shard {bad}, but db {db} has shards 0..{shards}"
            )));
        }
        let wanted: Vec<u32> = match options.shard {
            Some(shard) if shard >= shards => {
                return Err(Error::Invalid(format!(
                    "db {db} has shards 0..{shards}; there is no shard {shard}"
                )));
            }
            Some(shard) => vec![shard],
            None => (0..shards).collect(),
        };
        let (events, incoming) = mpsc::channel(wanted.len().max(1));
        let mut tasks = tokio::task::JoinSet::new();
        for shard in wanted {
            let request = SubscribeRequest {
                db: db.clone(),
                shard,
                start: FetchStart::Earliest,
                filter: options.filter.clone(),
                since_ms: options.since_ms,
                credit: options.credit,
            };
            let task = ShardTask {
                client: self.clone(),
                endpoint: self.endpoint().clone(),
                request,
                holders: self.holders(&routes, shard),
                position: from.shard(shard).cloned(),
                events: events.clone(),
            };
            tasks.spawn(task.run());
        }
        Ok(Subscription {
            events: incoming,
            current: VecDeque::new(),
            taken: None,
            batch_end: None,
            cursor: from,
            tasks,
            failed: false,
        })
    }
}

impl Subscription {
    /// The next entry, waiting for one; `None` once the subscription has ended (after
    /// an error it returned).
    pub async fn next(&mut self) -> Option<Result<Delivered>> {
        loop {
            if let Some(delivered) = self.current.pop_front() {
                self.cursor.advance(delivered.shard, &delivered.entry);
                if self.current.is_empty() {
                    self.finish_batch();
                }
                return Some(Ok(delivered));
            }
            self.finish_batch();
            if self.failed {
                return None;
            }
            match self.events.recv().await? {
                Event::Batch { shard, entries, cursor, taken } => {
                    self.current = entries.into_iter().map(|entry| Delivered { shard, entry }).collect();
                    self.taken = Some(taken);
                    self.batch_end = Some((shard, cursor));
                }
                Event::Idle { shard, cursor } => {
                    self.cursor.0.insert(shard, cursor);
                }
                Event::OutOfRange { shard, gone } => {
                    self.failed = true;
                    self.tasks.abort_all();
                    return Some(Err(out_of_range(shard, gone, &self.cursor)));
                }
            }
        }
    }

    /// Entries received and not yet taken by [`Self::next`] (0: the next call waits for
    /// the sites).
    pub fn buffered(&self) -> usize {
        self.current.len()
    }

    /// Where to resume from: right after the last entry [`Self::next`] returned (on any
    /// replica, with [`Client::subscribe`] or [`Client::read`]).
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The current batch is all handed out: its end is the shard's position (it covers
    /// entries looked at and not matched), and its credit goes back to the site.
    fn finish_batch(&mut self) {
        if let Some((shard, end)) = self.batch_end.take() {
            self.cursor.0.insert(shard, end);
        }
        if let Some(taken) = self.taken.take() {
            let _ = taken.send(());
        }
    }
}

/// One shard's subscription, resumed elsewhere whenever it breaks.
struct ShardTask {
    client: Client,
    endpoint: Endpoint,
    request: SubscribeRequest,
    holders: Vec<SocketAddr>,
    position: Option<Frontier>,
    events: mpsc::Sender<Event>,
}

impl ShardTask {
    async fn run(mut self) {
        let shard = self.request.shard;
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.holders.is_empty() {
                self.holders = self.client.seeds().to_vec();
            }
            let at = self.holders[next % self.holders.len()];
            self.request.start = self.position.clone().map_or(FetchStart::Earliest, FetchStart::After);
            if let Ok(mut subscription) = self.endpoint.subscribe(at, &self.request).await {
                loop {
                    match subscription.next_within(SILENCE).await {
                        Ok(Some(SubscriptionFrame::Entries { entries, cursor })) => {
                            backoff = Duration::from_millis(100);
                            let n = entries.len() as u32;
                            self.position = Some(cursor.clone());
                            let (taken, done) = oneshot::channel();
                            if self.events.send(Event::Batch { shard, entries, cursor, taken }).await.is_err()
                            {
                                return;
                            }
                            if done.await.is_err() || subscription.credit(n).await.is_err() {
                                break;
                            }
                        }
                        // Everything up to it that matched was sent before it.
                        Ok(Some(SubscriptionFrame::Idle { cursor })) => {
                            self.position = Some(cursor.clone());
                            if self.events.send(Event::Idle { shard, cursor }).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(SubscriptionFrame::OutOfRange(gone))) => {
                            let _ = self.events.send(Event::OutOfRange { shard, gone }).await;
                            return;
                        }
                        Ok(Some(SubscriptionFrame::Refused { holders: elsewhere, reason })) => {
                            tracing::debug!(%at, shard, reason, "subscription refused; trying elsewhere");
                            for holder in elsewhere {
                                if !self.holders.contains(&holder) {
                                    self.holders.push(holder);
                                }
                            }
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            next += 1;
            if next.is_multiple_of(self.holders.len().max(1)) {
                // Every holder tried: the shard may have moved.
                self.client.forget_routes(&self.request.db);
                if let Ok(routes) = self.client.routes(&self.request.db).await {
                    for holder in self.client.holders(&routes, shard) {
                        if !self.holders.contains(&holder) {
                            self.holders.push(holder);
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
