//! Writing messages: [`Client::publish`] sends a list of messages to one shard and
//! waits for their ids; the [`crate::Producer`] pipelines many. Both send each batch to
//! a holder of the shard, and on to the next holder when one cannot be reached, is busy
//! or no longer holds the shard (routes are then asked for again).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_transport::{Ack, Request, Response, WriteRequest};
use cairn_types::{DbName, MAX_PAYLOAD, Message, ProducerName, Stored};

use crate::client::{Attempt, Client, unexpected};
use crate::error::{Error, Result};

/// Messages per write request.
pub(crate) const BATCH_MESSAGES: usize = 1000;
/// Payload bytes per write request (about).
pub(crate) const BATCH_BYTES: usize = 4 << 20;

/// How [`Client::publish`] writes.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// How durable before the answer: this site's commit (`Local`, the default), a
    /// majority of the db's replication factor (`Quorum`), every ready replica (`All`).
    pub ack: Ack,
    /// Write to this shard, whatever the routing says (default: the shard the db's
    /// routing gives for the first message's key, or else its topic).
    pub shard: Option<u32>,
    /// A writer's name and its number for the first message (the others follow on):
    /// a message the shard holds under the same name and number is not stored again,
    /// so a write whose outcome is unknown is retried safely at another holder. Without
    /// one, an unknown outcome is an [`Error::OutcomeUnknown`].
    pub producer: Option<(ProducerName, u64)>,
    /// How long the answering site waits for the acknowledgements `ack` asks for.
    pub ack_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self { ack: Ack::Local, shard: None, producer: None, ack_timeout: Duration::from_secs(5) }
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The shard written.
    pub shard: u32,
    /// Each message's id, in order (`duplicate` when the shard already held it under
    /// the same producer name and number).
    pub ids: Vec<Stored>,
    /// The sites that answered.
    pub sites: Vec<SocketAddr>,
}

impl Client {
    /// Publishes `messages` to one shard of `db` and waits for their ids, in batches of
    /// up to 1,000 messages (or 4 MiB).
    ///
    /// ```no_run
    /// # async fn example(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
    /// use cairn_client::{Message, PublishOptions, Topic};
    /// let message = Message::new(Topic::new("sensors/7/temp")?, b"21.5".to_vec());
    /// let published = client.publish(&"demo".parse()?, vec![message], &PublishOptions::default()).await?;
    /// println!("stored as {:?} in shard {}", published.ids[0].id, published.shard);
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        db: &DbName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<Published> {
        let Some(first) = messages.first() else {
            return Err(Error::Invalid("nothing to publish".into()));
        };
        if let Some(m) = messages.iter().find(|m| m.payload.len() > MAX_PAYLOAD) {
            return Err(Error::Invalid(format!(
                "a message of {} bytes is over the limit of {MAX_PAYLOAD}",
                m.payload.len()
            )));
        }
        let routes = self.routes(db).await?;
        let shards = routes.settings.shards.get();
        let shard = match options.shard {
            Some(shard) if shard >= shards => {
                return Err(Error::Invalid(format!(
                    "db {db} has shards 0..{shards}; there is no shard {shard}"
                )));
            }
            Some(shard) => shard,
            None => routes.settings.routing.shard(&first.topic, first.key.as_ref(), shards),
        };
        let mut published = Published { shard, ids: Vec::with_capacity(messages.len()), sites: Vec::new() };
        let mut start = 0;
        while start < messages.len() {
            let n = batch_len(&messages[start..]);
            let producer = options.producer.clone().map(|(name, first)| (name, first + start as u64));
            let batch = Batch { db, shard, messages: &messages[start..start + n], producer, options };
            let (at, ids) = self.write(&batch, Instant::now() + self.request_budget()).await?;
            published.ids.extend(ids);
            if !published.sites.contains(&at) {
                published.sites.push(at);
            }
            start += n;
        }
        Ok(published)
    }

    /// How long one batch may keep trying holders.
    pub(crate) fn request_budget(&self) -> Duration {
        self.endpoint_request_timeout() * 3
    }

    fn endpoint_request_timeout(&self) -> Duration {
        self.config().request_timeout
    }

    /// Writes one batch to a holder of its shard, trying holders in turn (and routes
    /// again) until `deadline`. An unknown outcome is tried again only with a producer
    /// stamp; without one it ends the write.
    pub(crate) async fn write(
        &self,
        batch: &Batch<'_>,
        deadline: Instant,
    ) -> Result<(SocketAddr, Vec<Stored>)> {
        let options = batch.options;
        let request = Request::Write(WriteRequest {
            db: batch.db.clone(),
            shard: batch.shard,
            messages: batch.messages.to_vec(),
            producer: batch.producer.clone(),
            ack: options.ack,
            ack_timeout_ms: u32::try_from(options.ack_timeout.as_millis()).unwrap_or(u32::MAX),
        });
        let mut failures: Vec<String> = Vec::new();
        let mut pause = Duration::from_millis(50);
        loop {
            let routes = self.routes(batch.db).await?;
            let mut holders = self.holders(&routes, batch.shard);
            let mut i = 0;
            while i < holders.len() {
                let at = holders[i];
                i += 1;
                match self.attempt(at, &request).await {
                    Attempt::Answered(Response::Written { ids }) => return Ok((at, ids)),
                    Attempt::Answered(Response::Rejected { reason }) => {
                        return Err(Error::Rejected(format!("{at}: {reason}")));
                    }
                    Attempt::Answered(other) => return Err(unexpected("write", at, other)),
                    Attempt::Failed(error) => return Err(error),
                    Attempt::Passed(why, elsewhere) => {
                        failures.push(why);
                        holders.extend(
                            elsewhere.into_iter().filter(|h| !holders.contains(h)).collect::<Vec<_>>(),
                        );
                    }
                    Attempt::Unknown(why) if batch.producer.is_some() => failures.push(why),
                    Attempt::Unknown(why) => {
                        return Err(Error::OutcomeUnknown(format!(
                            "{why}; {} message(s) may or may not be stored (a producer name makes retries safe)",
                            batch.messages.len()
                        )));
                    }
                }
            }
            if Instant::now() + pause >= deadline {
                let tried = failures.split_off(failures.len().saturating_sub(6));
                return Err(Error::Unreachable(format!(
                    "no holder of {}/{} took the write: {}",
                    batch.db,
                    batch.shard,
                    tried.join("; ")
                )));
            }
            // Every holder passed: the shard may have moved. Ask again, after a pause.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            self.forget_routes(batch.db);
        }
    }
}

/// One write request's worth of messages.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) db: &'a DbName,
    pub(crate) shard: u32,
    pub(crate) messages: &'a [Message],
    pub(crate) producer: Option<(ProducerName, u64)>,
    pub(crate) options: &'a PublishOptions,
}

/// How many of `messages` (from the first) make one write request.
pub(crate) fn batch_len(messages: &[Message]) -> usize {
    let (mut n, mut bytes) = (0, 0);
    while n < messages.len()
        && n < BATCH_MESSAGES
        && (n == 0 || bytes + messages[n].payload.len() <= BATCH_BYTES)
    {
        bytes += messages[n].payload.len();
        n += 1;
    }
    n
}
