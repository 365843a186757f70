//! The values cairn stores and sends, without any storage: what the inventory keeps,
//! what sites gossip and exchange over QUIC, and what clients read and write. No I/O
//! lives here (no LMDB, no network, no clock but [`now_ms`]), so a client builds it
//! without a storage engine.
//!
//! - [`error`]: [`ValueError`], what a type refuses;
//! - [`codec`]: the one encoding of every stored or sent byte (versioned, checked);
//! - [`ids`]: site, cluster and plan ids, db names;
//! - [`settings`]: a db's settings, validated on construction and on decode;
//! - [`topics`]: topics, MQTT topic filters, keys, producers, routing;
//! - [`records`]: dbs, replicas, plans, seals and drain orders;
//! - [`plan_machine`]: the plan state machine, pure;
//! - [`entries`]: shard log entries and messages; [`frontier`] and [`position`]:
//!   positions valid on every replica;
//! - [`revocations`]: the cluster's revocation list.

pub mod codec;
pub mod entries;
pub mod error;
pub mod frontier;
pub mod ids;
pub mod plan_machine;
pub mod position;
pub mod records;
pub mod revocations;
pub mod settings;
pub mod topics;

pub use entries::{AsMessage, Entry, EntryId, MAX_FRONTIER_ORIGINS, MAX_PAYLOAD, MAX_SEQ, Message, Stored};
pub use error::ValueError;
pub use frontier::Frontier;
pub use ids::{ClusterId, DbName, MAX_DB_NAME_LEN, PlanId, SiteId};
pub use plan_machine::{AdvanceOutcome, OfferOutcome, PlanRejection};
pub use position::{FetchStart, OutOfRange};
pub use records::{
    DbRecord, DrainOrder, Hlc, Identity, MAX_SEAL_CERTIFICATE, MAX_SEAL_SIGNATURE, OperatorSeal, PendingPlan,
    Plan, PlanEnd, PlanHistoryEntry, PlanOrigin, ReplicaRecord, ReplicaState, Role, Step,
};
pub use revocations::{MAX_REVOKED, MAX_REVOKED_URI, RevocationList, Revoked};
pub use settings::{DbSettings, MAX_REPLICATION, MAX_SHARDS, Replication, Retention, ShardCount};
pub use topics::{
    MAX_KEY_LEN, MAX_PRODUCER_LEN, MAX_TOPIC_LEN, MessageKey, ProducerName, ProducerStamp, Routing, Topic,
    TopicFilter, fnv1a64,
};

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
