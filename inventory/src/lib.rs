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
pub mod codec;
mod error;
mod ids;
mod import;
mod keys;
mod migrate;
pub mod plan_machine;
mod plans;
mod records;
mod revocations;
mod settings;
mod shard_log;
mod store;
mod topics;
mod verify;

pub use error::{InventoryError, Result};
pub use ids::{ClusterId, DbName, MAX_DB_NAME_LEN, PlanId, SiteId};
pub use import::{ImportOutcome, ImportedDb};
pub use plan_machine::{AdvanceOutcome, OfferOutcome, PlanRejection};
pub use records::{
    DbRecord, DrainOrder, Hlc, Identity, MAX_SEAL_CERTIFICATE, MAX_SEAL_SIGNATURE, OperatorSeal, PendingPlan,
    Plan, PlanEnd, PlanHistoryEntry, PlanOrigin, ReplicaRecord, ReplicaState, Role, Step,
};
pub use revocations::{MAX_REVOKED, MAX_REVOKED_URI, RevocationList, Revoked};
pub use settings::{DbSettings, MAX_REPLICATION, MAX_SHARDS, Replication, Retention, ShardCount};
pub use shard_log::{
    Append, Appended, AsMessage, CleanupOutcome, Entry, EntryId, FetchLimits, FetchQuery, FetchStart,
    Fetched, Frontier, InsertOutcome, LogEntry, MAX_FRONTIER_ORIGINS, MAX_PAYLOAD, MAX_SEQ, Message,
    OutOfRange, PullLimits, ReadBatch, ShardLogStats, Stored,
};
pub use store::{Inventory, InventoryConfig, LOCK_FILE, STORE_FORMAT, now_ms};
pub use topics::{
    MAX_KEY_LEN, MAX_PRODUCER_LEN, MAX_TOPIC_LEN, MessageKey, ProducerName, ProducerStamp, Routing, Topic,
    TopicFilter, fnv1a64,
};
pub use verify::{CorruptRecord, VerifyReport};
