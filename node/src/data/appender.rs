//! Group commit for publishes.
//!
//! Every publish to this site goes through one appender task. While one durable
//! transaction is being written, the publishes that arrive queue up; they are then
//! appended together in the next transaction, and each is answered after that commit.
//! One writer alone pays one disk sync per publish, as before; many concurrent writers
//! share them. Whether the replica takes writes is checked inside the same transaction,
//! so a replica that starts handing over cannot take a write after the check.

use std::sync::{Arc, Weak};

use cairn_inventory::{Append, Appended, DbName, Inventory, InventoryError};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};

/// Publishes queued for the next transaction; more wait in the request handlers.
const QUEUE: usize = 1024;
/// A transaction takes queued publishes up to about this many payload bytes.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// One publish waiting for its commit.
struct Job {
    db: DbName,
    shard: u32,
    messages: Vec<ByteBuf>,
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
    /// Starts the appender task of `inventory` (inside a tokio runtime). It ends when
    /// every handle is dropped.
    pub fn start(inventory: Arc<Inventory>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        // A weak handle: an idle appender does not keep the inventory open after the
        // site has let it go.
        tokio::spawn(run(Arc::downgrade(&inventory), queue));
        Self { jobs }
    }

    /// Appends `messages` to `(db, shard)` if this site's replica there is ready;
    /// answers after the commit. A failed transaction fails every publish in it.
    pub async fn append(
        &self,
        db: DbName,
        shard: u32,
        messages: Vec<ByteBuf>,
    ) -> Result<Appended, Arc<InventoryError>> {
        let (answer, answered) = oneshot::channel();
        let stopped = || Arc::new(InventoryError::InvalidSetting { what: "appender", why: "stopped".into() });
        self.jobs.send(Job { db, shard, messages, answer }).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(inventory: Weak<Inventory>, mut queue: mpsc::Receiver<Job>) {
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
        let written = tokio::task::spawn_blocking(move || {
            let members: Vec<_> =
                group.iter().map(|j| Append { db: &j.db, shard: j.shard, payloads: &j.messages }).collect();
            let result = inv.append_ready(&members);
            (group, result)
        })
        .await;
        let Ok((group, result)) = written else {
            tracing::error!("the appender's write task panicked; its publishes get no answer");
            continue;
        };
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
    job.messages.iter().map(|m| m.len()).sum()
}
