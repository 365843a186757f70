//! Group commit for publishes.
//!
//! Every publish to this site goes through one appender task. While one durable
//! transaction is being written, the publishes that arrive queue up; they are then
//! appended together in the next transaction, and each is answered after that commit.
//! One writer alone pays one disk sync per publish, as before; many concurrent writers
//! share them. Whether the replica takes writes is checked inside the same transaction,
//! so a replica that starts handing over cannot take a write after the check.

use std::sync::{Arc, Weak};

use cairn_inventory::{Append, Appended, DbName, Inventory, InventoryError, Message, ProducerName};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::supervisor::Supervisor;

/// Publishes queued for the next transaction; more wait in the request handlers.
const QUEUE: usize = 1024;
/// A transaction takes queued publishes up to about this many payload bytes.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// One publish waiting for its commit.
struct Job {
    db: DbName,
    shard: u32,
    messages: Vec<Message>,
    producer: Option<(ProducerName, u64)>,
    answer: oneshot::Sender<Result<Appended, Arc<InventoryError>>>,
}

/// The handle publishes go through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({}/{}, {} messages)", self.db, self.shard, self.messages.len())
    }
}

impl Appender {
    /// Starts the appender task of `inventory` under `supervisor` (inside a tokio
    /// runtime): restarted if it panics, it takes up the queue where it was. It ends
    /// when every handle is dropped.
    pub fn start(inventory: &Arc<Inventory>, supervisor: &Arc<Supervisor>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        // A weak handle: an idle appender does not keep the inventory open after the
        // site has let it go.
        let (inventory, queue) = (Arc::downgrade(inventory), Arc::new(Mutex::new(queue)));
        supervisor.spawn("appender", move || run(inventory.clone(), queue.clone()));
        Self { jobs }
    }

    /// Appends `messages` to `(db, shard)` if this site's replica there is ready (as
    /// `producer`'s, numbered from its number, when given: see
    /// [`Inventory::append_produced`]); answers after the commit. A failed transaction
    /// fails every publish in it.
    pub async fn append(
        &self,
        db: DbName,
        shard: u32,
        messages: Vec<Message>,
        producer: Option<(ProducerName, u64)>,
    ) -> Result<Appended, Arc<InventoryError>> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Arc::new(InventoryError::InvalidSetting { what: "appender", why: "stopped".into() });
        self.jobs.send(Job { db, shard, messages, producer, answer }).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(inventory: Weak<Inventory>, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut queue = queue.lock().await;
    while let Some(first) = queue.recv().await {
        let mut bytes = size(&first);
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES
            && let Ok(job) = queue.try_recv()
        {
            bytes += size(&job);
            group.push(job);
        }
        let Some(inv) = inventory.upgrade() else { return };
        // A panic here ends this group's publishes unanswered (their writers see the
        // site fail the request) and restarts the appender.
        let (group, result) = crate::supervisor::blocking(move || {
            let members: Vec<_> = group
                .iter()
                .map(|j| Append {
                    db: &j.db,
                    shard: j.shard,
                    payloads: &j.messages,
                    producer: j.producer.as_ref().map(|(name, first)| (name, *first)),
                })
                .collect();
            let result = inv.append_ready(&members);
            (group, result)
        })
        .await;
        match result {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.answer.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for job in group {
                    let _ = job.answer.send(Err(error.clone()));
                }
            }
        }
    }
}

fn size(job: &Job) -> usize {
    job.messages.iter().map(|m| m.payload.len()).sum()
}
