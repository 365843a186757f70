//! A producer: many messages in flight, batched per shard, each acknowledged on its own.
//!
//! [`Producer::send`] queues one message (waiting only while the queue is full) and
//! hands back an [`Acknowledgement`], a future of the message's id. Behind it, one lane
//! per shard takes whatever has queued for its shard, up to a batch, and writes it while
//! the next batch gathers: so throughput grows with load (group commit), shards are
//! written in parallel, and within a shard messages are stored in the order they were
//! sent (one batch in flight per shard).
//!
//! Every batch carries the producer's name and the per-shard number of its first
//! message, so a batch whose outcome is unknown (sent, no answer) is sent again — to the
//! same or another holder of the shard — without being stored twice. A producer's name is
//! random unless given; give one (and the first number to use) only to continue a
//! producer's numbering across processes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_transport::Ack;
use cairn_types::{DbName, MAX_PAYLOAD, Message, ProducerName, Stored};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::publish::{BATCH_BYTES, BATCH_MESSAGES, Batch, PublishOptions};

/// How a [`Producer`] writes.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// How durable before a message is acknowledged (see [`PublishOptions::ack`]).
    pub ack: Ack,
    /// The producer's name (default: `p-` and 16 random hex digits).
    pub name: Option<ProducerName>,
    /// The number of the first message of each shard (default 1).
    pub first_number: u64,
    /// Messages queued and not yet written, at most; [`Producer::send`] waits beyond.
    pub queue: usize,
    /// How long one batch keeps trying the shard's holders before its messages fail.
    pub delivery_timeout: Duration,
    /// How long the answering site waits for the acknowledgements `ack` asks for.
    pub ack_timeout: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            ack: Ack::Local,
            name: None,
            first_number: 1,
            queue: 16_384,
            delivery_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// A message's acknowledgement: resolves to its id once the shard holds it as durably
/// as the producer asked, or to the error that ended its batch.
#[derive(Debug)]
pub struct Acknowledgement {
    shard: u32,
    answer: oneshot::Receiver<Result<Stored>>,
}

impl Acknowledgement {
    /// The shard the message went to.
    pub fn shard(&self) -> u32 {
        self.shard
    }
}

impl Future for Acknowledgement {
    type Output = Result<Stored>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| Err(Error::Closed("the producer stopped before answering".into())))
        })
    }
}

/// One queued message.
struct Queued {
    message: Message,
    answer: oneshot::Sender<Result<Stored>>,
}

/// Messages sent and not yet answered, and a bell for [`Producer::flush`].
#[derive(Debug, Default)]
struct Outstanding {
    count: AtomicUsize,
    settled: Notify,
}

/// Publishes messages to one db with many in flight. Dropping it (or [`Self::close`])
/// lets what is queued finish.
///
/// ```no_run
/// # async fn example(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
/// use cairn_client::{Ack, Message, ProducerOptions, Topic};
/// let producer = client.producer("demo".parse()?, ProducerOptions { ack: Ack::Quorum, ..Default::default() })?;
/// let mut acks = Vec::new();
/// for i in 0..10_000 {
///     let message = Message::new(Topic::new(format!("sensors/{}", i % 10))?, format!("reading {i}"));
///     acks.push(producer.send(message).await?);
/// }
/// for ack in acks {
///     let stored = ack.await?;
///     assert!(stored.id.seq > 0);
/// }
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Producer {
    client: Client,
    db: DbName,
    lanes: tokio::sync::Mutex<HashMap<u32, mpsc::Sender<Queued>>>,
    options: ProducerOptions,
    name: ProducerName,
    outstanding: Arc<Outstanding>,
}

impl Client {
    /// A producer of messages to `db` (inside a tokio runtime).
    pub fn producer(&self, db: DbName, options: ProducerOptions) -> Result<Producer> {
        let name = match options.name.clone() {
            Some(name) => name,
            None => ProducerName::new(format!("p-{:016x}", rand::random::<u64>()))?,
        };
        if options.queue == 0 {
            return Err(Error::Invalid("a producer's queue holds at least one message".into()));
        }
        Ok(Producer {
            client: self.clone(),
            db,
            lanes: tokio::sync::Mutex::new(HashMap::new()),
            options,
            name,
            outstanding: Arc::default(),
        })
    }
}

impl Producer {
    /// The producer's name (what makes its retries idempotent).
    pub fn name(&self) -> &ProducerName {
        &self.name
    }

    /// Queues `message` for the shard the db's routing gives for its key (or else its
    /// topic), waiting while the queue is full; answers its acknowledgement.
    pub async fn send(&self, message: Message) -> Result<Acknowledgement> {
        let routes = self.client.routes(&self.db).await?;
        let shards = routes.settings.shards.get();
        let shard = routes.settings.routing.shard(&message.topic, message.key.as_ref(), shards);
        self.send_to(shard, message).await
    }

    /// Queues `message` for `shard`, whatever the routing says.
    pub async fn send_to(&self, shard: u32, message: Message) -> Result<Acknowledgement> {
        if message.payload.len() > MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "a message of {} bytes is over the limit of {MAX_PAYLOAD}",
                message.payload.len()
            )));
        }
        let lane = self.lane(shard).await;
        let (answer, receiver) = oneshot::channel();
        self.outstanding.count.fetch_add(1, Ordering::SeqCst);
        if lane.send(Queued { message, answer }).await.is_err() {
            settle(&self.outstanding, 1);
            return Err(Error::Closed("the producer's lane for this shard stopped".into()));
        }
        Ok(Acknowledgement { shard, answer: receiver })
    }

    /// Waits until every message sent so far (and any sent meanwhile) is answered.
    pub async fn flush(&self) {
        loop {
            let settled = self.outstanding.settled.notified();
            if self.outstanding.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            settled.await;
        }
    }

    /// Waits until what is queued is answered, then stops.
    pub async fn close(self) {
        self.flush().await;
    }

    async fn lane(&self, shard: u32) -> mpsc::Sender<Queued> {
        let mut lanes = self.lanes.lock().await;
        if let Some(lane) = lanes.get(&shard) {
            return lane.clone();
        }
        let (tx, rx) = mpsc::channel(self.options.queue);
        let lane = Lane {
            client: self.client.clone(),
            db: self.db.clone(),
            shard,
            name: self.name.clone(),
            next_number: self.options.first_number,
            options: self.options.clone(),
            outstanding: self.outstanding.clone(),
        };
        // Detached: a lane ends once its queue is empty and the producer gone, so what was
        // queued before a drop is still written and answered.
        tokio::spawn(lane.run(rx));
        lanes.insert(shard, tx.clone());
        tx
    }
}

/// Marks `n` messages answered.
fn settle(outstanding: &Outstanding, n: usize) {
    if outstanding.count.fetch_sub(n, Ordering::SeqCst) == n {
        outstanding.settled.notify_waiters();
    }
}

/// One shard's writer: one batch in flight at a time, so the shard stores messages in
/// the order they were sent.
struct Lane {
    client: Client,
    db: DbName,
    shard: u32,
    name: ProducerName,
    next_number: u64,
    options: ProducerOptions,
    outstanding: Arc<Outstanding>,
}

impl Lane {
    async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        let publish = PublishOptions {
            ack: self.options.ack,
            shard: Some(self.shard),
            producer: None,
            ack_timeout: self.options.ack_timeout,
        };
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            let mut bytes = batch[0].message.payload.len();
            while batch.len() < BATCH_MESSAGES {
                match queue.try_recv() {
                    Ok(next) if bytes + next.message.payload.len() <= BATCH_BYTES => {
                        bytes += next.message.payload.len();
                        batch.push(next);
                    }
                    Ok(next) => {
                        // Too big for this batch: it starts the next one.
                        self.write(&publish, std::mem::take(&mut batch)).await;
                        bytes = next.message.payload.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.write(&publish, batch).await;
        }
    }

    async fn write(&mut self, publish: &PublishOptions, queued: Vec<Queued>) {
        if queued.is_empty() {
            return;
        }
        let n = queued.len();
        let (messages, answers): (Vec<Message>, Vec<_>) =
            queued.into_iter().map(|q| (q.message, q.answer)).unzip();
        let first = self.next_number;
        self.next_number += n as u64;
        let batch = Batch {
            db: &self.db,
            shard: self.shard,
            messages: &messages,
            producer: Some((self.name.clone(), first)),
            options: publish,
        };
        let outcome = self.client.write(&batch, Instant::now() + self.options.delivery_timeout).await;
        match outcome {
            Ok((_, ids)) if ids.len() == n => {
                for (answer, id) in answers.into_iter().zip(ids) {
                    let _ = answer.send(Ok(id));
                }
            }
            Ok((at, ids)) => {
                let why = format!("{at} answered {} ids for {n} messages", ids.len());
                for answer in answers {
                    let _ = answer.send(Err(Error::Rejected(why.clone())));
                }
            }
            Err(error) => {
                tracing::debug!(db = %self.db, shard = self.shard, %error, "a producer batch failed");
                for answer in answers {
                    let _ = answer.send(Err(error.copy()));
                }
            }
        }
        settle(&self.outstanding, n);
    }
}
