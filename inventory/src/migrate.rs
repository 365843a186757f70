//! Store-format upgrades, run by `Inventory::open` in one write transaction when a data
//! dir was written by an older cairn.
//!
//! | from | to | change |
//! |------|----|--------|
//! | 1 | 2 | db records gain `changed` (= `created`), `dropped` (= false), `supersedes` (= none) |
//!
//! Each step re-encodes the records it changes from a frozen copy of their old shape, so
//! later changes to the live records cannot break an old upgrade.

use heed::RwTxn;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{DbName, SiteId};
use crate::records::{DbRecord, Hlc};
use crate::settings::{DbSettings, Retention};
use crate::store::{Tables, decode_record, put_record};

/// A db record as format 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DbRecordV1 {
    pub name: DbName,
    pub shards: u32,
    pub replication: u32,
    pub retention: Retention,
    pub created: Hlc,
    pub origin: SiteId,
}

/// Upgrades every record written in format `from` to the current format, inside `txn`.
/// Answers how many records were rewritten.
pub(crate) fn upgrade(tables: &Tables, txn: &mut RwTxn<'_>, from: u32) -> Result<u64> {
    let mut rewritten = 0;
    if from < 2 {
        rewritten += dbs_v1_to_v2(tables, txn)?;
    }
    Ok(rewritten)
}

fn dbs_v1_to_v2(tables: &Tables, txn: &mut RwTxn<'_>) -> Result<u64> {
    let mut records = Vec::new();
    for item in tables.dbs.iter(txn)? {
        let (key, bytes) = item?;
        let old: DbRecordV1 = decode_record(bytes, || crate::keys::describe("dbs", key))?;
        records.push((key.to_vec(), old));
    }
    for (key, old) in &records {
        let settings = DbSettings::new(old.shards, old.replication, old.retention).map_err(|e| {
            crate::error::InventoryError::Corrupt {
                record: crate::keys::describe("dbs", key),
                source: crate::codec::CodecError::Decode(e.to_string()),
            }
        })?;
        let new = DbRecord::new(old.name.clone(), settings, old.created, old.origin);
        put_record(tables.dbs, txn, key, &new, "db record")?;
    }
    Ok(records.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClusterId;
    use crate::store::{FORMAT_KEY, Inventory, InventoryConfig, STORE_FORMAT};

    #[test]
    fn a_format_1_store_is_upgraded_on_open_and_keeps_its_dbs() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let name = DbName::new("orders").unwrap();
        let old = DbRecordV1 {
            name: name.clone(),
            shards: 8,
            replication: 3,
            retention: Retention { max_age_ms: Some(60_000), max_bytes: None },
            created: Hlc { wall_ms: 1_700_000_000_000, logical: 2 },
            origin: SiteId::random(),
        };
        {
            let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
            // Write what a format-1 cairn left behind.
            inv.write(|txn| {
                put_record(inv.tables.meta, txn, FORMAT_KEY, &1u32, "format")?;
                put_record(inv.tables.dbs, txn, &crate::keys::db(&name), &old, "db record")
            })
            .unwrap();
        }
        let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
        let db = inv.db(&name).unwrap().expect("the db survives the upgrade");
        assert_eq!(
            db,
            DbRecord::new(
                name.clone(),
                DbSettings::new(8, 3, old.retention).unwrap(),
                old.created,
                old.origin
            ),
            "changed = created, not dropped"
        );
        let format: u32 = inv
            .read(|txn| crate::store::get_record(inv.tables.meta, txn, FORMAT_KEY, "format"))
            .unwrap()
            .unwrap();
        assert_eq!(format, STORE_FORMAT);
        drop(inv);
        // Opening again is a no-op.
        let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
        assert_eq!(inv.dbs().unwrap().len(), 1);
    }
}
