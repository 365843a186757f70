//! Shard log entries as replicas, writers and readers exchange them: ids, entries,
//! messages, the ids a write answers, and the bounds every log keeps.

use serde::{Deserialize, Serialize};

use crate::ids::SiteId;
use crate::topics::{MessageKey, ProducerStamp, Topic};

/// The largest payload one entry may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The highest origin seq a log takes: seqs above it are reserved, so counting on from
/// any seq a log holds never overflows. Entries and frontiers beyond it are refused.
pub const MAX_SEQ: u64 = 1 << 62;
/// The most origin sites a frontier received from outside may list.
pub const MAX_FRONTIER_ORIGINS: usize = 16_384;

/// An entry's identity in every replica of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// The site where the entry was written.
    pub origin: SiteId,
    /// Its number among that site's entries of this shard, from 1.
    pub seq: u64,
}

/// An entry as replicas exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Its identity.
    pub id: EntryId,
    /// When it was written at its origin (ms since the Unix epoch, origin's clock, or
    /// the time its writer gave).
    pub origin_ms: u64,
    /// Its topic (`""` for entries written without one).
    pub topic: Topic,
    /// Its key, if the writer gave one.
    pub key: Option<MessageKey>,
    /// Its writer's name and number, if the writer gave them (idempotent publishing).
    pub producer: Option<ProducerStamp>,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Entry {
    /// An entry of topic `""` with no key and no producer.
    pub fn plain(id: EntryId, origin_ms: u64, payload: Vec<u8>) -> Self {
        Self { id, origin_ms, topic: Topic::default(), key: None, producer: None, payload }
    }
}

/// A message as a writer hands it over: what the origin stores with a new id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Its topic.
    pub topic: Topic,
    /// Its key, if any (routes it instead of the topic).
    pub key: Option<MessageKey>,
    /// The writer's timestamp (ms since the Unix epoch); `None`: the origin's clock.
    pub ts_ms: Option<u64>,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Message {
    /// A message of `topic` with no key, stamped by the origin.
    pub fn new(topic: Topic, payload: impl Into<Vec<u8>>) -> Self {
        Self { topic, key: None, ts_ms: None, payload: payload.into() }
    }
}

/// What an append takes: a [`Message`], or plain bytes (a message of topic `""`).
pub trait AsMessage {
    /// The topic.
    fn topic(&self) -> &Topic;
    /// The key.
    fn key(&self) -> Option<&MessageKey>;
    /// The writer's timestamp.
    fn ts_ms(&self) -> Option<u64>;
    /// The payload.
    fn payload(&self) -> &[u8];
}

static EMPTY_TOPIC: std::sync::LazyLock<Topic> = std::sync::LazyLock::new(Topic::default);

impl<T: AsRef<[u8]>> AsMessage for T {
    fn topic(&self) -> &Topic {
        &EMPTY_TOPIC
    }
    fn key(&self) -> Option<&MessageKey> {
        None
    }
    fn ts_ms(&self) -> Option<u64> {
        None
    }
    fn payload(&self) -> &[u8] {
        self.as_ref()
    }
}

impl AsMessage for Message {
    fn topic(&self) -> &Topic {
        &self.topic
    }
    fn key(&self) -> Option<&MessageKey> {
        self.key.as_ref()
    }
    fn ts_ms(&self) -> Option<u64> {
        self.ts_ms
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// A message's id as an append answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The id.
    pub id: EntryId,
    /// Whether the shard already held the message (same producer and number), stored
    /// under this id before.
    pub duplicate: bool,
}
