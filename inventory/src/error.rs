//! The inventory's error type.

use std::path::PathBuf;

use crate::codec::CodecError;
use crate::ids::{ClusterId, DbName, SiteId};
use crate::plan_machine::PlanRejection;

/// Everything that can go wrong in the inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Another process (or another handle in this one) has the data dir open.
    #[error("data dir {path} is in use by another cairn process (lock file {lock} is held)")]
    Locked {
        /// The data dir.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The data dir belongs to another cluster.
    #[error(
        "data dir {path} belongs to cluster {found}, not {expected}; use another data dir or the right cluster"
    )]
    WrongCluster {
        /// The data dir.
        path: PathBuf,
        /// The cluster asked for.
        expected: ClusterId,
        /// The cluster stored there.
        found: ClusterId,
    },
    /// The data dir belongs to another site than the one asked for.
    #[error("data dir {path} belongs to site {found}, not {expected}")]
    WrongSite {
        /// The data dir.
        path: PathBuf,
        /// The site asked for.
        expected: SiteId,
        /// The site stored there.
        found: SiteId,
    },
    /// An imported placement contradicts what the inventory holds.
    #[error("cannot import {entry}: {why}")]
    ImportConflict {
        /// Which entry, in words (`db NAME`, `db NAME shard N`).
        entry: String,
        /// What it contradicts.
        why: String,
    },
    /// The data dir was written by a newer cairn with a store format this build cannot read.
    #[error("data dir {path} has store format {found}; this cairn reads format {supported}: upgrade cairn")]
    NewerFormat {
        /// The data dir.
        path: PathBuf,
        /// The format found.
        found: u32,
        /// The format this build reads.
        supported: u32,
    },
    /// `open_existing` found no inventory in the data dir.
    #[error("no cairn inventory in {path}")]
    NotAnInventory {
        /// The data dir.
        path: PathBuf,
    },
    /// A stored record failed its version or checksum check, or did not decode.
    #[error("corrupt record {record}: {source}")]
    Corrupt {
        /// Which record, in words (table and key).
        record: String,
        /// What was wrong with it.
        source: CodecError,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why not.
        source: CodecError,
    },
    /// The LMDB map is full and growing it is disabled or would pass the maximum.
    #[error("inventory map is full at {map_size} bytes (growth disabled or maximum reached)")]
    MapFull {
        /// The map size reached.
        map_size: usize,
    },
    /// The disk holding the data dir is full.
    #[error("no space left on the device holding {path}")]
    NoSpace {
        /// The data dir.
        path: PathBuf,
    },
    /// A value its type refuses (a db name, an id, a setting out of range).
    #[error(transparent)]
    Value(#[from] cairn_types::ValueError),
    /// A setting out of its allowed range.
    #[error("invalid {what}: {why}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// The allowed range or rule.
        why: String,
    },
    /// The db is not in this inventory.
    #[error("unknown db {0}")]
    UnknownDb(DbName),
    /// The shard index is not below the db's shard count.
    #[error("db {db} has {shards} shards; shard {shard} does not exist")]
    ShardOutOfRange {
        /// The db.
        db: DbName,
        /// The shard asked for.
        shard: u32,
        /// The db's shard count.
        shards: u32,
    },
    /// This site holds no replica of the shard (it was removed while entries for it
    /// were on their way).
    #[error("no replica of {db}/{shard} here")]
    NoReplica {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
    },
    /// A log entry's payload is larger than allowed.
    #[error("entry payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A remote log entry that cannot be right.
    #[error("invalid log entry: {why}")]
    InvalidEntry {
        /// What is wrong with it.
        why: String,
    },
    /// An offered plan was refused.
    #[error("plan rejected: {0}")]
    PlanRejected(#[from] PlanRejection),
    /// A file-system error around the data dir.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An LMDB error not covered above.
    #[error("lmdb: {0}")]
    Lmdb(#[from] heed::Error),
}

/// The inventory's result type.
pub type Result<T, E = InventoryError> = std::result::Result<T, E>;
