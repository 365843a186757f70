//! Store-format upgrades, run by `Inventory::open` in one write transaction when a data
//! dir was written by an older cairn.
//!
//! | from | to | change |
//! |------|----|--------|
//! | 1 | 2 | db records gain `changed` (= `created`), `dropped` (= false), `supersedes` (= none) |
//! | 2 | 3 | db settings gain `routing` (= version 1); log entries gain `topic` (= `""`), `key` and `producer` (= none), and are indexed in `log_by_origin` |
//! | 3 | 4 | db records gain `seal` (= none: such a record stays local, see `DbRecord::seal`) |
//! | 4 | 5 | the topic index is keyed by origin and seq block first (`keys::topic_entry`); its entries are re-keyed |
//!
//! Each step re-encodes the records it changes from a frozen copy of their old shape, so
//! later changes to the live records cannot break an old upgrade.

use heed::RwTxn;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{DbName, SiteId};
use crate::records::{DbRecord, Hlc};
use crate::settings::{DbSettings, Retention};
use crate::shard_log::EntryId;
use crate::store::{Tables, decode_record, put_record};
use crate::topics::Topic;

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

/// Db settings as formats 1 and 2 stored them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DbSettingsV2 {
    pub shards: u32,
    pub replication: u32,
    pub retention: Retention,
}

/// A db record as format 2 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DbRecordV2 {
    pub name: DbName,
    pub settings: DbSettingsV2,
    pub created: Hlc,
    pub origin: SiteId,
    pub changed: Hlc,
    pub dropped: bool,
    pub supersedes: Option<Hlc>,
}

/// A db record as format 3 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DbRecordV3 {
    pub name: DbName,
    pub settings: DbSettings,
    pub created: Hlc,
    pub origin: SiteId,
    pub changed: Hlc,
    pub dropped: bool,
    pub supersedes: Option<Hlc>,
}

/// A stored log entry as format 2 (and 1) stored it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEntryV2 {
    pub id: EntryId,
    pub origin_ms: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub arrived_ms: u64,
}

/// Format 3's stored entry, frozen.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEntryV3<'a> {
    id: EntryId,
    origin_ms: u64,
    topic: Topic,
    key: Option<serde_bytes::ByteBuf>,
    producer: Option<(String, u64)>,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    arrived_ms: u64,
}

/// Upgrades every record written in format `from` to the current format, inside `txn`.
/// Answers how many records were rewritten.
pub(crate) fn upgrade(tables: &Tables, txn: &mut RwTxn<'_>, from: u32) -> Result<u64> {
    let mut rewritten = 0;
    if from < 2 {
        rewritten += dbs_v1_to_v2(tables, txn)?;
    }
    if from < 3 {
        rewritten += dbs_v2_to_v3(tables, txn)?;
        rewritten += entries_v2_to_v3(tables, txn)?;
    }
    if from < 4 {
        rewritten += dbs_v3_to_v4(tables, txn)?;
    }
    if from < 5 {
        rewritten += topics_v4_to_v5(tables, txn)?;
    }
    Ok(rewritten)
}

fn corrupt(table: &str, key: &[u8], why: String) -> crate::error::InventoryError {
    crate::error::InventoryError::Corrupt {
        record: crate::keys::describe(table, key),
        source: crate::codec::CodecError::Decode(why),
    }
}

fn dbs_v2_to_v3(tables: &Tables, txn: &mut RwTxn<'_>) -> Result<u64> {
    let mut records = Vec::new();
    for item in tables.dbs.iter(txn)? {
        let (key, bytes) = item?;
        let old: DbRecordV2 = decode_record(bytes, || crate::keys::describe("dbs", key))?;
        records.push((key.to_vec(), old));
    }
    for (key, old) in &records {
        let s = old.settings;
        let settings = DbSettings::new(s.shards, s.replication, s.retention)
            .map_err(|e| corrupt("dbs", key, e.to_string()))?;
        let new = DbRecordV3 {
            name: old.name.clone(),
            settings,
            created: old.created,
            origin: old.origin,
            changed: old.changed,
            dropped: old.dropped,
            supersedes: old.supersedes,
        };
        put_record(tables.dbs, txn, key, &new, "db record")?;
    }
    Ok(records.len() as u64)
}

fn dbs_v3_to_v4(tables: &Tables, txn: &mut RwTxn<'_>) -> Result<u64> {
    let mut records = Vec::new();
    for item in tables.dbs.iter(txn)? {
        let (key, bytes) = item?;
        let old: DbRecordV3 = decode_record(bytes, || crate::keys::describe("dbs", key))?;
        records.push((key.to_vec(), old));
    }
    for (key, old) in records.iter().cloned() {
        let new = DbRecord {
            name: old.name,
            settings: old.settings,
            created: old.created,
            origin: old.origin,
            changed: old.changed,
            dropped: old.dropped,
            supersedes: old.supersedes,
            seal: None,
        };
        put_record(tables.dbs, txn, &key, &new, "db record")?;
    }
    Ok(records.len() as u64)
}

/// Re-keys the topic index from format 4's `shard key ++ fnv1a64(topic) ++ origin ++ seq`
/// to [`crate::keys::topic_entry`]; values (arrival numbers) stay.
fn topics_v4_to_v5(tables: &Tables, txn: &mut RwTxn<'_>) -> Result<u64> {
    let mut entries = Vec::new();
    for item in tables.log_topics.iter(txn)? {
        let (key, value) = item?;
        let malformed = || corrupt("log_topics", key, "a format 4 topic index key is malformed".into());
        let (db, shard, rest) = crate::keys::split_shard(key).ok_or_else(malformed)?;
        let (hash, rest) = rest.split_at_checked(8).ok_or_else(malformed)?;
        let (origin, seq) = crate::keys::site_prefix(rest).ok_or_else(malformed)?;
        let hash = crate::keys::u64_suffix(hash).ok_or_else(malformed)?;
        let seq = crate::keys::u64_suffix(seq).ok_or_else(malformed)?;
        let shard_key = crate::keys::shard(&db, shard);
        entries.push((crate::keys::topic_entry(&shard_key, origin, hash, seq), value.to_vec()));
    }
    tables.log_topics.clear(txn)?;
    for (key, value) in &entries {
        tables.log_topics.put(txn, key, value)?;
    }
    Ok(entries.len() as u64)
}

/// Re-encodes every log entry with the empty topic and indexes it, in place (arrival
/// numbers stay).
fn entries_v2_to_v3(tables: &Tables, txn: &mut RwTxn<'_>) -> Result<u64> {
    let empty = Topic::default();
    let mut count = 0;
    let mut buf = Vec::new();
    let mut cursor = Vec::new();
    loop {
        // In slices, so the iterator does not outlive the writes.
        let mut slice = Vec::new();
        let start = if cursor.is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(&cursor[..])
        };
        for item in tables.log_entries.range(txn, &(start, std::ops::Bound::Unbounded))?.take(4096) {
            let (key, bytes) = item?;
            let old: StoredEntryV2 = decode_record(bytes, || crate::keys::describe("log_entries", key))?;
            slice.push((key.to_vec(), old));
        }
        let Some((last, _)) = slice.last() else { break };
        cursor = last.clone();
        for (key, old) in &slice {
            let (_, _, rest) = crate::keys::split_shard(key)
                .ok_or_else(|| corrupt("log_entries", key, "malformed key".into()))?;
            let arrival = crate::keys::u64_suffix(rest)
                .ok_or_else(|| corrupt("log_entries", key, "malformed key".into()))?;
            let shard_key = &key[..key.len() - 8];
            let new = StoredEntryV3 {
                id: old.id,
                origin_ms: old.origin_ms,
                topic: empty.clone(),
                key: None,
                producer: None,
                payload: &old.payload,
                arrived_ms: old.arrived_ms,
            };
            crate::codec::encode_checked_into(&new, &mut buf)
                .map_err(|source| crate::error::InventoryError::Encode { what: "log entry", source })?;
            tables.log_entries.put(txn, key, &buf)?;
            let by_origin = crate::keys::early(shard_key, old.id.origin, old.id.seq);
            tables.log_by_origin.put(txn, &by_origin, &crate::keys::by_origin_value(arrival, false))?;
            count += 1;
        }
    }
    Ok(count)
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
        let settings = DbSettingsV2 {
            shards: settings.shards.get(),
            replication: settings.replication.get(),
            retention: old.retention,
        };
        let new = DbRecordV2 {
            name: old.name.clone(),
            settings,
            created: old.created,
            origin: old.origin,
            changed: old.created,
            dropped: false,
            supersedes: None,
        };
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

    #[test]
    fn a_format_3_store_keeps_its_dbs_unsealed() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let name = DbName::new("three").unwrap();
        let at = Hlc { wall_ms: 1_700_000_000_000, logical: 1 };
        let old = DbRecordV3 {
            name: name.clone(),
            settings: DbSettings::new(8, 2, Retention::default()).unwrap(),
            created: at,
            origin: SiteId(5),
            changed: at,
            dropped: false,
            supersedes: None,
        };
        {
            let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
            inv.write(|txn| {
                put_record(inv.tables.meta, txn, FORMAT_KEY, &3u32, "format")?;
                put_record(inv.tables.dbs, txn, &crate::keys::db(&name), &old, "db record")
            })
            .unwrap();
        }
        let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
        let db = inv.db(&name).unwrap().expect("the db survives the upgrade");
        assert_eq!(db, DbRecord::new(name, old.settings, at, SiteId(5)), "the same record, with no seal");
    }

    #[test]
    fn a_format_2_store_keeps_its_entries_as_topic_less_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let name = DbName::new("old").unwrap();
        let origin = SiteId(77);
        let created = Hlc { wall_ms: 1_700_000_000_000, logical: 0 };
        let old_db = DbRecordV2 {
            name: name.clone(),
            settings: DbSettingsV2 { shards: 2, replication: 1, retention: Retention::default() },
            created,
            origin,
            changed: created,
            dropped: false,
            supersedes: None,
        };
        {
            let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
            inv.write(|txn| {
                put_record(inv.tables.meta, txn, FORMAT_KEY, &2u32, "format")?;
                put_record(inv.tables.dbs, txn, &crate::keys::db(&name), &old_db, "db record")?;
                for seq in 1..=3u64 {
                    let entry = StoredEntryV2 {
                        id: EntryId { origin, seq },
                        origin_ms: seq,
                        payload: format!("m{seq}").into_bytes(),
                        arrived_ms: seq,
                    };
                    let key = crate::keys::with_u64(&crate::keys::shard(&name, 1), seq - 1);
                    put_record(inv.tables.log_entries, txn, &key, &entry, "entry")?;
                    let frontier = crate::keys::frontier(&crate::keys::shard(&name, 1), origin);
                    let record = crate::shard_log::FrontierRecord { contiguous: seq, early: 0 };
                    put_record(inv.tables.log_frontiers, txn, &frontier, &record, "frontier")?;
                }
                Ok(())
            })
            .unwrap();
        }
        let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
        let db = inv.db(&name).unwrap().unwrap();
        assert_eq!(db.settings.routing, crate::Routing::Fnv1a64);
        assert_eq!(db.created, created);
        let filter = crate::TopicFilter::new("").unwrap();
        let query =
            crate::FetchQuery { start: &crate::FetchStart::Earliest, filter: &filter, since_ms: None };
        let limits = crate::FetchLimits { max_entries: 10, max_bytes: 1 << 20, max_scanned: 100 };
        let fetched = inv.fetch(&name, 1, query, limits).unwrap().unwrap();
        let payloads: Vec<_> = fetched.entries.iter().map(|e| e.payload.clone()).collect();
        assert_eq!(payloads, vec![b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]);
        assert!(fetched.entries.iter().all(|e| e.topic.as_str().is_empty() && e.key.is_none()));
        assert!(inv.verify().unwrap().corrupt.is_empty());
    }

    #[test]
    fn a_format_4_topic_index_is_re_keyed_and_topic_reads_find_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let name = DbName::new("four").unwrap();
        let topic = |n: u64| Topic::new(format!("t/{}", n % 3)).unwrap();
        // Enough entries to span several blocks of the new index.
        let count = 3 * (1u64 << crate::keys::TOPIC_BLOCK_BITS) + 5;
        {
            let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
            let messages: Vec<_> =
                (0..count).map(|n| crate::Message::new(topic(n), n.to_be_bytes().to_vec())).collect();
            inv.append(&name, 0, &messages).unwrap();
            // Back to format 4: the same index entries under the old keys.
            inv.write(|txn| {
                let mut old = Vec::new();
                for item in inv.tables.log_topics.iter(txn)? {
                    let (key, value) = item?;
                    let (_, _, rest) = crate::keys::split_shard(key).unwrap();
                    let (origin, rest) = crate::keys::site_prefix(rest).unwrap();
                    let hash = &rest[8..16];
                    let seq = &rest[16..24];
                    let mut old_key = crate::keys::shard(&name, 0);
                    old_key.extend_from_slice(hash);
                    old_key.extend_from_slice(&origin.0.to_be_bytes());
                    old_key.extend_from_slice(seq);
                    old.push((old_key, value.to_vec()));
                }
                inv.tables.log_topics.clear(txn)?;
                for (key, value) in &old {
                    inv.tables.log_topics.put(txn, key, value)?;
                }
                put_record(inv.tables.meta, txn, FORMAT_KEY, &4u32, "format")
            })
            .unwrap();
        }
        let inv = Inventory::open(dir.path(), cluster, InventoryConfig::default()).unwrap();
        let filter = crate::TopicFilter::new("t/1").unwrap();
        let limits = crate::FetchLimits { max_entries: 100_000, max_bytes: 1 << 30, max_scanned: 100_000 };
        let query =
            crate::FetchQuery { start: &crate::FetchStart::Earliest, filter: &filter, since_ms: None };
        let fetched = inv.fetch(&name, 0, query, limits).unwrap().unwrap();
        let got: Vec<u64> =
            fetched.entries.iter().map(|e| u64::from_be_bytes(e.payload[..].try_into().unwrap())).collect();
        let want: Vec<u64> = (0..count).filter(|n| n % 3 == 1).collect();
        assert_eq!(got, want);
        assert!(!fetched.more);
        assert!(inv.verify().unwrap().corrupt.is_empty());
    }
}
