//! Byte layouts of the LMDB keys.
//!
//! Keys sort the way the store scans them: a db's records are contiguous, a shard's log
//! entries are contiguous and in arrival order. Numbers are big-endian so byte order is
//! numeric order.
//!
//! - db key: `[name length: u8][name bytes]`
//! - shard key: `db key ++ [shard: u32 BE]`
//! - log entry: `shard key ++ [arrival: u64 BE]`
//! - frontier: `shard key ++ [origin site: u128 BE]`
//! - early id: `shard key ++ [origin site: u128 BE] ++ [origin seq: u64 BE]`
//! - history: `db key ++ [history number: u64 BE]`
//! - by origin: `shard key ++ [origin site: u128 BE] ++ [origin seq: u64 BE]` →
//!   `[arrival: u64 BE] ++ [hidden: u8]`
//! - by topic: `shard key ++ [origin: u128 BE] ++ [seq >> 12: u64 BE] ++
//!   [fnv1a64(topic): u64 BE] ++ [seq: u64 BE]` → `[arrival: u64 BE]` (store format 5;
//!   before, `shard key ++ fnv1a64(topic) ++ origin ++ seq`)
//! - producer: `shard key ++ [name length: u8] ++ [name] ++ [its number: u64 BE]` →
//!   `[origin: u128 BE] ++ [seq: u64 BE]`

use crate::ids::{DbName, SiteId};

/// `[len][name]`.
pub(crate) fn db(name: &DbName) -> Vec<u8> {
    let bytes = name.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + bytes.len() + 28);
    // DbName guarantees at most 64 bytes, so the length fits a u8.
    key.push(bytes.len() as u8);
    key.extend_from_slice(bytes);
    key
}

/// `db key ++ shard`.
pub(crate) fn shard(name: &DbName, shard: u32) -> Vec<u8> {
    let mut key = db(name);
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// `prefix ++ n` for a u64 suffix (log entries, history).
pub(crate) fn with_u64(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// `shard key ++ origin`.
pub(crate) fn frontier(shard_key: &[u8], origin: SiteId) -> Vec<u8> {
    let mut key = Vec::with_capacity(shard_key.len() + 16);
    key.extend_from_slice(shard_key);
    key.extend_from_slice(&origin.0.to_be_bytes());
    key
}

/// `shard key ++ origin ++ seq`.
pub(crate) fn early(shard_key: &[u8], origin: SiteId, seq: u64) -> Vec<u8> {
    with_u64(&frontier(shard_key, origin), seq)
}

/// Origin seqs per block of the topic index: a block's index entries are contiguous
/// (see [`topic_entry`]).
pub(crate) const TOPIC_BLOCK_BITS: u32 = 12;

/// The topic index block an origin seq falls in.
pub(crate) fn topic_block(seq: u64) -> u64 {
    seq >> TOPIC_BLOCK_BITS
}

/// The first and last seq of a topic index block.
pub(crate) fn topic_block_seqs(block: u64) -> (u64, u64) {
    let first = block << TOPIC_BLOCK_BITS;
    (first, first | ((1 << TOPIC_BLOCK_BITS) - 1))
}

/// `shard key ++ origin ++ block(seq) ++ fnv1a64(topic) ++ seq`: an entry's key in the
/// topic index. Origin and block come first, so the entries one write adds — one
/// origin's consecutive seqs, in any number of topics — are neighbours in the table
/// and a commit touches a few pages, not one per topic; a read of one topic seeks once
/// per block.
pub(crate) fn topic_entry(shard_key: &[u8], origin: SiteId, topic_hash: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(shard_key.len() + 16 + 24);
    key.extend_from_slice(shard_key);
    key.extend_from_slice(&origin.0.to_be_bytes());
    key.extend_from_slice(&topic_block(seq).to_be_bytes());
    key.extend_from_slice(&topic_hash.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The hash the topic index files `topic` under.
pub(crate) fn topic_hash(topic: &crate::topics::Topic) -> u64 {
    crate::topics::fnv1a64(topic.as_str().as_bytes())
}

/// `shard key ++ [len] name ++ n`.
pub(crate) fn producer(shard_key: &[u8], name: &crate::topics::ProducerName, n: u64) -> Vec<u8> {
    let bytes = name.as_str().as_bytes();
    let mut key = Vec::with_capacity(shard_key.len() + 1 + bytes.len() + 8);
    key.extend_from_slice(shard_key);
    // ProducerName guarantees at most 128 bytes.
    key.push(bytes.len() as u8);
    key.extend_from_slice(bytes);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The value of a by-origin index entry.
pub(crate) fn by_origin_value(arrival: u64, hidden: bool) -> [u8; 9] {
    let mut value = [0; 9];
    value[..8].copy_from_slice(&arrival.to_be_bytes());
    value[8] = u8::from(hidden);
    value
}

/// Reads a by-origin index value: the arrival number and whether the entry is hidden.
pub(crate) fn split_by_origin_value(value: &[u8]) -> Option<(u64, bool)> {
    let (arrival, flag) = value.split_at_checked(8)?;
    match flag {
        [0] => Some((u64_suffix(arrival)?, false)),
        [1] => Some((u64_suffix(arrival)?, true)),
        _ => None,
    }
}

/// An entry id as the producer index stores it.
pub(crate) fn id_value(origin: SiteId, seq: u64) -> [u8; 24] {
    let mut value = [0; 24];
    value[..16].copy_from_slice(&origin.0.to_be_bytes());
    value[16..].copy_from_slice(&seq.to_be_bytes());
    value
}

/// Reads an id stored by [`id_value`].
pub(crate) fn split_id_value(value: &[u8]) -> Option<(SiteId, u64)> {
    let (origin, rest) = site_prefix(value)?;
    Some((origin, u64_suffix(rest)?))
}

/// Splits a key that starts with a db key into the name and the rest.
pub(crate) fn split_db(key: &[u8]) -> Option<(DbName, &[u8])> {
    let (&len, rest) = key.split_first()?;
    let len = usize::from(len);
    let name = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((DbName::new(name).ok()?, &rest[len..]))
}

/// Splits a key that starts with a shard key into db, shard and the rest.
pub(crate) fn split_shard(key: &[u8]) -> Option<(DbName, u32, &[u8])> {
    let (name, rest) = split_db(key)?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    Some((name, shard, &rest[4..]))
}

/// Reads a trailing big-endian u64.
pub(crate) fn u64_suffix(rest: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Reads a big-endian site id.
pub(crate) fn site_prefix(rest: &[u8]) -> Option<(SiteId, &[u8])> {
    let id = u128::from_be_bytes(rest.get(..16)?.try_into().ok()?);
    Some((SiteId(id), &rest[16..]))
}

/// Human description of a key, for error messages about corrupt records.
pub(crate) fn describe(table: &str, key: &[u8]) -> String {
    match split_shard(key) {
        Some((db, shard, rest)) if rest.len() == 8 => {
            format!("{table}[{db}/{shard} #{}]", u64_suffix(rest).unwrap_or_default())
        }
        Some((db, shard, [])) => format!("{table}[{db}/{shard}]"),
        _ => match split_db(key) {
            Some((db, [])) => format!("{table}[{db}]"),
            _ => format!("{table}[{}]", String::from_utf8_lossy(key).escape_default()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let name = DbName::new("events").unwrap();
        let key = with_u64(&shard(&name, 7), 42);
        let (db, s, rest) = split_shard(&key).unwrap();
        assert_eq!((db, s, u64_suffix(rest)), (name.clone(), 7, Some(42)));
        assert_eq!(describe("log", &key), "log[events/7 #42]");
        assert!(split_db(&[200, b'a']).is_none());
    }

    #[test]
    fn entry_keys_sort_by_arrival() {
        let name = DbName::new("d").unwrap();
        let sk = shard(&name, 1);
        assert!(with_u64(&sk, 255) < with_u64(&sk, 256));
        assert!(with_u64(&sk, u64::MAX) < with_u64(&shard(&name, 2), 0));
    }
}
