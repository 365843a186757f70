//! Shard logs: each shard's append-only set of entries.
//!
//! An entry is identified by `(origin site, origin seq)`, so a log is a grow-only set and
//! replicas merge from any number of peers without duplicates. Each replica also numbers
//! entries in its own arrival order; reads go in that order. Arrival numbers are handed
//! out inside write transactions, which LMDB runs one at a time, so an entry committed
//! after a read always numbers above everything that read returned.
//!
//! The **frontier** is, per origin, the seq up to which every entry is held. Entries that
//! arrive above it (out of order) are remembered in the `log_early` table until the gap
//! closes, so duplicates are recognised either way: at or below the frontier, or listed
//! as early.
//!
//! Three indexes serve reads that must not depend on one replica's arrival order
//! ([`fetch`]): `log_by_origin` (origin, seq → arrival), `log_topics` (origin, seq block,
//! topic hash, seq → arrival) and `log_producers` (producer name, its number → id, for
//! idempotent appends). Each is written in the transaction that stores the entry.

mod cleanup;
mod fetch;
mod read;
mod write;

use serde::{Deserialize, Serialize};

use crate::ids::DbName;
use crate::records::ReplicaState;
use crate::topics::{MessageKey, ProducerName, ProducerStamp, Topic};

pub(crate) use cairn_types::entries::{AsMessage, Entry, EntryId, MAX_PAYLOAD, MAX_SEQ, Stored};
pub(crate) use cairn_types::{FetchStart, Frontier, OutOfRange};
pub use fetch::{FetchLimits, FetchQuery, Fetched};

/// An entry as a local read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its local arrival number (the read cursor).
    pub arrival: u64,
    /// The entry.
    pub entry: Entry,
}

/// A page of a pull read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// Entries in arrival order.
    pub entries: Vec<LogEntry>,
    /// The cursor to read from next.
    pub next: u64,
}

/// Bounds of one [`Inventory::read_beyond`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// Stop after this many entries.
    pub max_entries: usize,
    /// Stop once this many payload bytes are taken.
    pub max_bytes: usize,
    /// Stop after looking at this many entries (taken or not), so one call stays short.
    pub max_scanned: usize,
}

/// What inserting a batch of remote entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Entries new to this log.
    pub inserted: u64,
    /// Entries it already held (ignored).
    pub duplicates: u64,
}

/// One member of a group append ([`Inventory::append_ready`]).
#[derive(Debug, Clone, Copy)]
pub struct Append<'a, P> {
    /// The db.
    pub db: &'a DbName,
    /// The shard.
    pub shard: u32,
    /// The messages, in order.
    pub payloads: &'a [P],
    /// The writer's name and its number for the first message (the others follow on),
    /// for idempotent publishing: a message whose `(name, number)` the shard holds is
    /// not stored again, and answered with the id it was stored under.
    pub producer: Option<(&'a ProducerName, u64)>,
}

/// A group member's outcome: its ids, or the state of the replica here (`None`: no
/// replica) when that replica takes no writes.
pub type Appended = Result<Vec<Stored>, Option<ReplicaState>>;

/// Size of one shard's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLogStats {
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// The arrival number the next entry will get.
    pub next_arrival: u64,
    /// The highest seq this site has used as origin in this shard (kept when the log is
    /// dropped, so a later replica never reuses one).
    pub own_seq: u64,
}

/// What a retention clean-up removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// Entries removed.
    pub removed: u64,
    /// Payload bytes removed.
    pub removed_bytes: u64,
    /// Whether more entries are due and another call should follow.
    pub more: bool,
}

/// Per-shard counters. Kept when a log is dropped, so arrival numbers and this site's
/// own seqs are never reused.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct ShardLogMeta {
    pub(crate) next_arrival: u64,
    /// The highest seq this site has used (or seen) as origin in this shard.
    pub(crate) own_seq: u64,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// Per-origin frontier, plus how many of its entries wait in `log_early`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct FrontierRecord {
    pub(crate) contiguous: u64,
    pub(crate) early: u64,
}

/// The stored form of an entry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    pub(crate) entry: Entry,
    pub(crate) arrived_ms: u64,
}

/// Borrowed twin of `StoredEntry` with the same encoding, so appends do not copy payloads.
#[derive(Serialize)]
struct StoredEntryRef<'a> {
    id: EntryId,
    origin_ms: u64,
    topic: &'a Topic,
    key: Option<&'a MessageKey>,
    producer: Option<&'a ProducerStamp>,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    arrived_ms: u64,
}
