//! A whole-store integrity check: every record of every table decoded and checked.

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::error::Result;
use crate::keys;
use crate::records::{DbRecord, Identity, PendingPlan, PlanHistoryEntry, ReplicaRecord};
use crate::shard_log::{FrontierRecord, ShardLogMeta, StoredEntry};
use crate::store::Inventory;

/// A record that failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Which record (table and key, in words).
    pub record: String,
    /// What is wrong with it.
    pub error: CodecError,
}

/// What [`Inventory::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub checked: u64,
    /// Records that failed.
    pub corrupt: Vec<CorruptRecord>,
}

fn check<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), CodecError> {
    codec::decode_checked::<T>(bytes).map(drop)
}

fn raw(well_formed: bool) -> Result<(), CodecError> {
    if well_formed { Ok(()) } else { Err(CodecError::Decode("malformed index entry".into())) }
}

impl Inventory {
    /// Reads every record of every table and reports the ones that do not decode.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.read(|txn| {
            let mut report = VerifyReport::default();
            for (name, table) in self.tables.named() {
                for item in table.iter(txn)? {
                    let (key, bytes) = item?;
                    let result = match name {
                        "meta" if key == b"format" => check::<u32>(bytes),
                        "meta" => check::<Identity>(bytes),
                        "dbs" => check::<DbRecord>(bytes),
                        "replicas" => check::<ReplicaRecord>(bytes),
                        "plans" => check::<PendingPlan>(bytes),
                        "plan_history" => check::<PlanHistoryEntry>(bytes),
                        "log_entries" => check::<StoredEntry>(bytes),
                        "log_frontiers" => check::<FrontierRecord>(bytes),
                        "log_early" => check::<()>(bytes),
                        "log_cursors" => check::<u64>(bytes),
                        // Index entries are plain bytes of fixed lengths.
                        "log_by_origin" => raw(keys::split_by_origin_value(bytes).is_some()),
                        "log_topics" => raw(bytes.len() == 8),
                        "log_producers" => {
                            raw(keys::split_id_value(bytes).is_some_and(|_| bytes.len() == 24))
                        }
                        _ => check::<ShardLogMeta>(bytes),
                    };
                    report.checked += 1;
                    if let Err(error) = result {
                        report.corrupt.push(CorruptRecord { record: keys::describe(name, key), error });
                    }
                }
            }
            Ok(report)
        })
    }
}
