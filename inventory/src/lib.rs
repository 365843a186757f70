//! cairn's inventory: a site's own facts, on LMDB, written by that site only.
//!
//! One LMDB environment per data dir holds the site's identity, the dbs it knows, its
//! replicas, its pending plan per db with a bounded history, and its shard logs. Every
//! stored value is encoded by [`codec`] with a version byte and a CRC32C. The plan state
//! machine ([`plan_machine`]) is pure; [`Inventory`] applies each of its transitions in
//! one durable write transaction, so a crash resumes at the same step.
//!
//! No network code lives here.

mod catalog;
mod error;
mod import;
mod keys;
mod migrate;
mod plans;
mod revocations;
mod shard_log;
mod store;
mod verify;

// The values (ids, settings, topics, records, entries, positions, the codec) live in
// `cairn-types`, which has no storage in it; they are re-exported here whole, so users
// of the inventory name them as before.
pub use cairn_types::{codec, plan_machine};
use cairn_types::{ids, records, settings, topics};

pub use cairn_types::{
    AdvanceOutcome, AsMessage, ClusterId, DbName, DbRecord, DbSettings, DrainOrder, Entry, EntryId,
    FetchStart, Frontier, Hlc, Identity, MAX_DB_NAME_LEN, MAX_FRONTIER_ORIGINS, MAX_KEY_LEN, MAX_PAYLOAD,
    MAX_PRODUCER_LEN, MAX_REPLICATION, MAX_REVOKED, MAX_REVOKED_URI, MAX_SEAL_CERTIFICATE,
    MAX_SEAL_SIGNATURE, MAX_SEQ, MAX_SHARDS, MAX_TOPIC_LEN, Message, MessageKey, OfferOutcome, OperatorSeal,
    OutOfRange, PendingPlan, Plan, PlanEnd, PlanHistoryEntry, PlanId, PlanOrigin, PlanRejection,
    ProducerName, ProducerStamp, ReplicaRecord, ReplicaState, Replication, Retention, RevocationList,
    Revoked, Role, Routing, ShardCount, SiteId, Step, Stored, Topic, TopicFilter, fnv1a64, now_ms,
};
pub use error::{InventoryError, Result};
pub use import::{ImportOutcome, ImportedDb};
pub use shard_log::{
    Append, Appended, CleanupOutcome, FetchLimits, FetchQuery, Fetched, InsertOutcome, LogEntry, PullLimits,
    ReadBatch, ShardLogStats,
};
pub use store::{Inventory, InventoryConfig, LOCK_FILE, STORE_FORMAT};
pub use verify::{CorruptRecord, VerifyReport};
