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
//! as early. In-order appends (the common case) touch only the entry table.

use std::collections::BTreeMap;
use std::ops::Bound;

use heed::RwTxn;
use serde::{Deserialize, Serialize};

use crate::error::{InventoryError, Result};
use crate::ids::{DbName, SiteId};
use crate::keys;
use crate::records::{ReplicaRecord, ReplicaState};
use crate::settings::Retention;
use crate::store::{Inventory, decode_record, get_record, now_ms, put_record};

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
    /// When it was written at its origin (ms since the Unix epoch, origin's clock).
    pub origin_ms: u64,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// An entry as a local read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its local arrival number (the read cursor).
    pub arrival: u64,
    /// The entry.
    pub entry: Entry,
}

/// Per origin site, the seq up to which a log holds every entry.
///
/// Encoded as a map in binary formats and as a list of `[origin, seq]` pairs in JSON.
/// Decoding refuses more than [`MAX_FRONTIER_ORIGINS`] origins, an origin listed twice
/// and seqs above [`MAX_SEQ`], so a frontier from a peer or a file is always in range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier(pub BTreeMap<SiteId, u64>);

impl Serialize for Frontier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_seq(self.0.iter())
        } else {
            serializer.collect_map(self.0.iter())
        }
    }
}

impl<'de> Deserialize<'de> for Frontier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;

        impl Visit {
            fn add<E: serde::de::Error>(
                map: &mut BTreeMap<SiteId, u64>,
                origin: SiteId,
                seq: u64,
            ) -> Result<(), E> {
                if map.len() >= MAX_FRONTIER_ORIGINS {
                    return Err(E::custom(format!(
                        "a frontier lists at most {MAX_FRONTIER_ORIGINS} origins"
                    )));
                }
                if seq > MAX_SEQ {
                    return Err(E::custom(format!(
                        "frontier seq {seq} of origin {origin} is above the maximum {MAX_SEQ}"
                    )));
                }
                if map.insert(origin, seq).is_some() {
                    return Err(E::custom(format!("frontier lists origin {origin} twice")));
                }
                Ok(())
            }
        }

        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Frontier;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a frontier: at most {MAX_FRONTIER_ORIGINS} (origin, seq) pairs")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> std::result::Result<Frontier, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((origin, seq)) = access.next_entry::<SiteId, u64>()? {
                    Self::add(&mut map, origin, seq)?;
                }
                Ok(Frontier(map))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut access: A,
            ) -> std::result::Result<Frontier, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((origin, seq)) = access.next_element::<(SiteId, u64)>()? {
                    Self::add(&mut map, origin, seq)?;
                }
                Ok(Frontier(map))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_seq(Visit)
        } else {
            deserializer.deserialize_map(Visit)
        }
    }
}

impl Frontier {
    /// The seq up to which `origin`'s entries are all held (0: none).
    pub fn get(&self, origin: SiteId) -> u64 {
        self.0.get(&origin).copied().unwrap_or(0)
    }

    /// Whether this frontier holds everything `other` holds.
    pub fn covers(&self, other: &Self) -> bool {
        other.0.iter().all(|(origin, seq)| self.get(*origin) >= *seq)
    }

    /// How many entries this frontier holds beyond `other`: per origin, the seqs it
    /// covers above `other`'s, summed (saturating).
    pub fn entries_beyond(&self, other: &Self) -> u64 {
        self.0.iter().map(|(origin, seq)| seq.saturating_sub(other.get(*origin))).fold(0, u64::saturating_add)
    }

    /// `(origin, seq)` pairs in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.0.iter().map(|(origin, seq)| (*origin, *seq))
    }

    /// How many origins it lists.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it lists no origin.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
}

/// A group member's outcome: its ids, or the state of the replica here (`None`: no
/// replica) when that replica takes no writes.
pub type Appended = std::result::Result<Vec<EntryId>, Option<ReplicaState>>;

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
    next_arrival: u64,
    /// The highest seq this site has used (or seen) as origin in this shard.
    own_seq: u64,
    entries: u64,
    bytes: u64,
}

/// Per-origin frontier, plus how many of its entries wait in `log_early`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct FrontierRecord {
    contiguous: u64,
    early: u64,
}

/// The stored form of an entry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    entry: Entry,
    arrived_ms: u64,
}

/// Borrowed twin of `StoredEntry` with the same encoding, so appends do not copy payloads.
#[derive(Serialize)]
struct StoredEntryRef<'a> {
    id: EntryId,
    origin_ms: u64,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    arrived_ms: u64,
}

/// One write transaction's view of a shard log: counters and frontiers are read once,
/// changed in memory, and written back at the end.
struct LogTxn<'i> {
    inv: &'i Inventory,
    shard_key: Vec<u8>,
    meta: ShardLogMeta,
    frontiers: BTreeMap<SiteId, FrontierRecord>,
    buf: Vec<u8>,
    /// Reused for entry keys.
    key: Vec<u8>,
    now_ms: u64,
}

impl<'i> LogTxn<'i> {
    fn begin(inv: &'i Inventory, txn: &RwTxn<'_>, db: &DbName, shard: u32) -> Result<Self> {
        let shard_key = keys::shard(db, shard);
        let meta =
            get_record(inv.tables.log_shards, txn, &shard_key, &keys::describe("log_shards", &shard_key))?
                .unwrap_or_default();
        Ok(Self {
            inv,
            key: shard_key.clone(),
            shard_key,
            meta,
            frontiers: BTreeMap::new(),
            buf: Vec::with_capacity(512),
            now_ms: now_ms(),
        })
    }

    fn frontier(&mut self, txn: &RwTxn<'_>, origin: SiteId) -> Result<&mut FrontierRecord> {
        if !self.frontiers.contains_key(&origin) {
            let key = keys::frontier(&self.shard_key, origin);
            let record =
                get_record(self.inv.tables.log_frontiers, txn, &key, &keys::describe("log_frontiers", &key))?
                    .unwrap_or_default();
            self.frontiers.insert(origin, record);
        }
        Ok(self.frontiers.get_mut(&origin).expect("inserted above"))
    }

    /// Stores one entry under the next arrival number.
    fn put_entry(&mut self, txn: &mut RwTxn<'_>, id: EntryId, origin_ms: u64, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(InventoryError::PayloadTooLarge { len: payload.len(), max: MAX_PAYLOAD });
        }
        let stored = StoredEntryRef { id, origin_ms, payload, arrived_ms: self.now_ms };
        crate::codec::encode_checked_into(&stored, &mut self.buf)
            .map_err(|source| InventoryError::Encode { what: "log entry", source })?;
        // The entry key is the shard key plus the arrival number; reuse one buffer.
        self.key.truncate(self.shard_key.len());
        self.key.extend_from_slice(&self.meta.next_arrival.to_be_bytes());
        self.inv.tables.log_entries.put(txn, &self.key, &self.buf)?;
        self.meta.next_arrival = self.meta.next_arrival.saturating_add(1);
        self.meta.entries = self.meta.entries.saturating_add(1);
        self.meta.bytes = self.meta.bytes.saturating_add(payload.len() as u64);
        if id.origin == self.inv.identity().site_id {
            self.meta.own_seq = self.meta.own_seq.max(id.seq);
        }
        Ok(())
    }

    /// Moves `origin`'s frontier up to at least `to`, then over any early entries that
    /// now continue it.
    fn raise(&mut self, txn: &mut RwTxn<'_>, origin: SiteId, to: u64) -> Result<()> {
        let early_table = self.inv.tables.log_early;
        self.frontier(txn, origin)?;
        let Self { frontiers, shard_key, .. } = self;
        let record = frontiers.get_mut(&origin).expect("loaded above");
        if to > record.contiguous && record.early > 0 {
            // Early entries the jump passes over are now below the frontier.
            let from = keys::early(shard_key, origin, record.contiguous + 1);
            let upto = keys::early(shard_key, origin, to);
            let range = (Bound::Included(&from[..]), Bound::Included(&upto[..]));
            let passed = early_table.delete_range(txn, &range)?;
            record.early = record.early.saturating_sub(passed as u64);
        }
        record.contiguous = record.contiguous.max(to);
        while record.early > 0
            && early_table.delete(txn, &keys::early(shard_key, origin, record.contiguous + 1))?
        {
            record.contiguous += 1;
            record.early -= 1;
        }
        Ok(())
    }

    fn commit(self, txn: &mut RwTxn<'_>) -> Result<()> {
        for (origin, record) in &self.frontiers {
            let key = keys::frontier(&self.shard_key, *origin);
            put_record(self.inv.tables.log_frontiers, txn, &key, record, "frontier")?;
        }
        put_record(self.inv.tables.log_shards, txn, &self.shard_key, &self.meta, "shard log counters")
    }
}

impl Inventory {
    /// Appends messages written at this site, in one durable transaction. Answers their
    /// ids, in order.
    pub fn append<P: AsRef<[u8]>>(&self, db: &DbName, shard: u32, payloads: &[P]) -> Result<Vec<EntryId>> {
        self.write(|txn| self.append_in(txn, db, shard, payloads))
    }

    /// Group commit: appends, in one durable transaction, each member's messages to its
    /// shard's log if this site's replica of that shard is ready at that moment (checked
    /// in the same transaction). Answers, per member in order, the ids, or — when the
    /// replica takes no writes — its state here (`None`: no replica). Many concurrent
    /// writers then share one disk sync.
    pub fn append_ready<P: AsRef<[u8]>>(&self, group: &[Append<'_, P>]) -> Result<Vec<Appended>> {
        self.write(|txn| {
            let mut out = Vec::with_capacity(group.len());
            for member in group {
                let key = keys::shard(member.db, member.shard);
                let replica: Option<ReplicaRecord> =
                    get_record(self.tables.replicas, txn, &key, &keys::describe("replicas", &key))?;
                out.push(match replica.map(|r| r.state) {
                    Some(ReplicaState::Ready) => {
                        Ok(self.append_in(txn, member.db, member.shard, member.payloads)?)
                    }
                    other => Err(other),
                });
            }
            Ok(out)
        })
    }

    fn append_in<P: AsRef<[u8]>>(
        &self,
        txn: &mut RwTxn<'_>,
        db: &DbName,
        shard: u32,
        payloads: &[P],
    ) -> Result<Vec<EntryId>> {
        let me = self.identity().site_id;
        let mut log = LogTxn::begin(self, txn, db, shard)?;
        let mut ids = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let seq = log
                .meta
                .own_seq
                .max(log.frontier(txn, me)?.contiguous)
                .checked_add(1)
                .filter(|seq| *seq <= MAX_SEQ)
                .ok_or_else(|| InventoryError::InvalidEntry {
                    why: format!("this site's seqs in {db}/{shard} reached the maximum {MAX_SEQ}"),
                })?;
            let id = EntryId { origin: me, seq };
            log.put_entry(txn, id, log.now_ms, payload.as_ref())?;
            log.raise(txn, me, seq)?;
            ids.push(id);
        }
        log.commit(txn)?;
        Ok(ids)
    }

    /// Inserts entries received from other replicas, in one durable transaction.
    /// Entries already held are ignored.
    pub fn insert_remote(&self, db: &DbName, shard: u32, entries: &[Entry]) -> Result<InsertOutcome> {
        self.insert_pulled(db, shard, entries, None)
    }

    /// [`Self::insert_remote`] for a batch pulled from `upstream`, which also stores, in
    /// the same transaction, the upstream's arrival number up to which this log now has
    /// everything it lacked (see [`Self::pull_cursor`]). A pulled batch is only taken
    /// into a replica this site holds ([`InventoryError::NoReplica`] otherwise), so a
    /// batch arriving after the replica's removal cannot bring its log back.
    pub fn insert_pulled(
        &self,
        db: &DbName,
        shard: u32,
        entries: &[Entry],
        upstream: Option<(SiteId, u64)>,
    ) -> Result<InsertOutcome> {
        self.write(|txn| {
            let mut log = LogTxn::begin(self, txn, db, shard)?;
            if upstream.is_some() && self.tables.replicas.get(txn, &log.shard_key)?.is_none() {
                return Err(InventoryError::NoReplica { db: db.clone(), shard });
            }
            if let Some((site, cursor)) = upstream {
                let key = keys::frontier(&log.shard_key, site);
                put_record(self.tables.log_cursors, txn, &key, &cursor, "pull cursor")?;
            }
            let mut outcome = InsertOutcome::default();
            for entry in entries {
                let EntryId { origin, seq } = entry.id;
                if seq == 0 || seq > MAX_SEQ {
                    return Err(InventoryError::InvalidEntry {
                        why: format!("origin seq {seq} of {origin} is out of range 1..={MAX_SEQ}"),
                    });
                }
                let contiguous = log.frontier(txn, origin)?.contiguous;
                if seq <= contiguous {
                    outcome.duplicates += 1;
                    continue;
                }
                if seq > contiguous + 1 {
                    let early_key = keys::early(&log.shard_key, origin, seq);
                    if self.tables.log_early.get(txn, &early_key)?.is_some() {
                        outcome.duplicates += 1;
                        continue;
                    }
                    put_record(self.tables.log_early, txn, &early_key, &(), "early entry id")?;
                    log.frontier(txn, origin)?.early += 1;
                }
                log.put_entry(txn, entry.id, entry.origin_ms, &entry.payload)?;
                if seq == contiguous + 1 {
                    log.raise(txn, origin, seq)?;
                }
                outcome.inserted += 1;
            }
            log.commit(txn)?;
            Ok(outcome)
        })
    }

    /// Marks every entry up to `frontier` as held, for entries that the source no longer
    /// has (removed by retention there). Entries above it still arrive normally. Like
    /// [`Self::insert_pulled`], refused with [`InventoryError::NoReplica`] when this
    /// site holds no replica of the shard (a pull finishing after the replica's removal
    /// must not leave a frontier behind).
    pub fn raise_frontier(&self, db: &DbName, shard: u32, frontier: &Frontier) -> Result<()> {
        self.write(|txn| {
            let mut log = LogTxn::begin(self, txn, db, shard)?;
            if self.tables.replicas.get(txn, &log.shard_key)?.is_none() {
                return Err(InventoryError::NoReplica { db: db.clone(), shard });
            }
            for (origin, seq) in &frontier.0 {
                if *seq > MAX_SEQ {
                    return Err(InventoryError::InvalidEntry {
                        why: format!("frontier seq {seq} of {origin} is above the maximum {MAX_SEQ}"),
                    });
                }
                log.raise(txn, *origin, *seq)?;
            }
            log.commit(txn)
        })
    }

    /// The shard log's frontier.
    pub fn frontier(&self, db: &DbName, shard: u32) -> Result<Frontier> {
        let prefix = keys::shard(db, shard);
        self.read(|txn| self.frontier_in(txn, &prefix))
    }

    fn frontier_in(&self, txn: &heed::RoTxn<'_, heed::WithoutTls>, prefix: &[u8]) -> Result<Frontier> {
        let mut frontier = Frontier::default();
        for item in self.tables.log_frontiers.prefix_iter(txn, prefix)? {
            let (key, bytes) = item?;
            let record: FrontierRecord = decode_record(bytes, || keys::describe("log_frontiers", key))?;
            let origin = keys::site_prefix(&key[prefix.len()..]).map(|(site, _)| site).ok_or_else(|| {
                InventoryError::Corrupt {
                    record: keys::describe("log_frontiers", key),
                    source: crate::codec::CodecError::Decode("malformed key".into()),
                }
            })?;
            if record.contiguous > 0 {
                frontier.0.insert(origin, record.contiguous);
            }
        }
        Ok(frontier)
    }

    /// Where a pull from `upstream` resumes: the upstream's arrival number below which
    /// this log has received everything it lacked (0: from the start).
    pub fn pull_cursor(&self, db: &DbName, shard: u32, upstream: SiteId) -> Result<u64> {
        let key = keys::frontier(&keys::shard(db, shard), upstream);
        self.read(|txn| {
            Ok(get_record(self.tables.log_cursors, txn, &key, &keys::describe("log_cursors", &key))?
                .unwrap_or_default())
        })
    }

    /// The frontier and counters of a shard log, read in one transaction (so the
    /// frontier describes exactly the entries numbered below `next_arrival`, plus
    /// entries removed by retention).
    pub fn log_position(&self, db: &DbName, shard: u32) -> Result<(Frontier, ShardLogStats)> {
        let key = keys::shard(db, shard);
        self.read(|txn| {
            let frontier = self.frontier_in(txn, &key)?;
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &key, &keys::describe("log_shards", &key))?
                    .unwrap_or_default();
            let stats = ShardLogStats {
                entries: meta.entries,
                bytes: meta.bytes,
                next_arrival: meta.next_arrival,
                own_seq: meta.own_seq,
            };
            Ok((frontier, stats))
        })
    }

    /// Reads, from arrival number `from` on, the entries `wanted` accepts (typically:
    /// those above a receiver's frontier), until `max_bytes` of payload or `max_entries`
    /// entries are taken or `max_scanned` entries looked at. Answers the entries (in
    /// arrival order) and the arrival number to continue from. A corrupt entry is an
    /// error naming it.
    pub fn read_beyond(
        &self,
        db: &DbName,
        shard: u32,
        from: u64,
        wanted: impl Fn(EntryId) -> bool,
        limits: PullLimits,
    ) -> Result<(Vec<Entry>, u64)> {
        let prefix = keys::shard(db, shard);
        let start = keys::with_u64(&prefix, from);
        let end = keys::with_u64(&prefix, u64::MAX);
        self.read(|txn| {
            let mut entries = Vec::new();
            let (mut next, mut bytes, mut scanned) = (from, 0usize, 0usize);
            let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
            for item in self.tables.log_entries.range(txn, &range)? {
                if entries.len() >= limits.max_entries
                    || bytes >= limits.max_bytes
                    || scanned >= limits.max_scanned
                {
                    break;
                }
                let (key, value) = item?;
                let arrival = keys::u64_suffix(&key[prefix.len()..]).unwrap_or(next);
                let stored: StoredEntry = decode_record(value, || keys::describe("log_entries", key))?;
                scanned += 1;
                next = arrival + 1;
                if wanted(stored.entry.id) {
                    bytes += stored.entry.payload.len();
                    entries.push(stored.entry);
                }
            }
            Ok((entries, next))
        })
    }

    /// Reads up to `max` entries in arrival order, starting at arrival number `from`.
    /// A corrupt entry is an error naming it; read from its number + 1 to skip it.
    pub fn read_log(&self, db: &DbName, shard: u32, from: u64, max: usize) -> Result<ReadBatch> {
        self.read_log_within(db, shard, from, max, usize::MAX)
    }

    /// [`Self::read_log`], stopping before an entry that would take the payload bytes
    /// read past `max_bytes` (the first entry is always read): nothing beyond what the
    /// answer carries is decoded.
    pub fn read_log_within(
        &self,
        db: &DbName,
        shard: u32,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch> {
        let prefix = keys::shard(db, shard);
        let start = keys::with_u64(&prefix, from);
        let end = keys::with_u64(&prefix, u64::MAX);
        self.read(|txn| {
            let mut entries = Vec::with_capacity(max.min(1024));
            let (mut next, mut bytes) = (from, 0usize);
            let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
            for item in self.tables.log_entries.range(txn, &range)?.take(max) {
                let (key, value) = item?;
                // The stored value bounds the payload's size before anything is decoded.
                if !entries.is_empty() && bytes.saturating_add(value.len()) > max_bytes {
                    break;
                }
                let arrival = keys::u64_suffix(&key[prefix.len()..]).unwrap_or(next);
                let stored: StoredEntry = decode_record(value, || keys::describe("log_entries", key))?;
                bytes = bytes.saturating_add(value.len());
                entries.push(LogEntry { arrival, entry: stored.entry });
                next = arrival.saturating_add(1);
            }
            Ok(ReadBatch { entries, next })
        })
    }

    /// The arrival number of the oldest entry the log still holds (what retention left),
    /// or the next arrival number when it holds none.
    pub fn log_start(&self, db: &DbName, shard: u32) -> Result<u64> {
        let prefix = keys::shard(db, shard);
        self.read(|txn| {
            if let Some(item) = self.tables.log_entries.prefix_iter(txn, &prefix)?.next() {
                let (key, _) = item?;
                if let Some(arrival) = keys::u64_suffix(&key[prefix.len()..]) {
                    return Ok(arrival);
                }
            }
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &prefix, &keys::describe("log_shards", &prefix))?
                    .unwrap_or_default();
            Ok(meta.next_arrival)
        })
    }

    /// Entry count, bytes and next arrival number of a shard log.
    pub fn log_stats(&self, db: &DbName, shard: u32) -> Result<ShardLogStats> {
        let key = keys::shard(db, shard);
        self.read(|txn| {
            let meta: ShardLogMeta =
                get_record(self.tables.log_shards, txn, &key, &keys::describe("log_shards", &key))?
                    .unwrap_or_default();
            Ok(ShardLogStats {
                entries: meta.entries,
                bytes: meta.bytes,
                next_arrival: meta.next_arrival,
                own_seq: meta.own_seq,
            })
        })
    }

    /// Deletes a shard's whole log (entries and frontier). Arrival numbers and this site's
    /// own seqs continue where they were if the log is filled again.
    pub fn drop_log(&self, db: &DbName, shard: u32) -> Result<()> {
        let key = keys::shard(db, shard);
        self.write(|txn| self.drop_log_in(txn, &key))
    }

    pub(crate) fn drop_log_in(&self, txn: &mut RwTxn<'_>, shard_key: &[u8]) -> Result<()> {
        for table in [
            self.tables.log_entries,
            self.tables.log_frontiers,
            self.tables.log_early,
            self.tables.log_cursors,
        ] {
            crate::catalog::delete_prefix(table, txn, shard_key)?;
        }
        self.reset_shard_metas(txn, shard_key)
    }

    /// Zeroes the entry and byte counts of every shard log under `prefix`, keeping the
    /// arrival and own-seq counters.
    pub(crate) fn reset_shard_metas(&self, txn: &mut RwTxn<'_>, prefix: &[u8]) -> Result<()> {
        let mut metas = Vec::new();
        for item in self.tables.log_shards.prefix_iter(txn, prefix)? {
            let (key, bytes) = item?;
            let meta: ShardLogMeta = decode_record(bytes, || keys::describe("log_shards", key))?;
            metas.push((key.to_vec(), meta));
        }
        for (key, meta) in metas {
            let meta = ShardLogMeta { entries: 0, bytes: 0, ..meta };
            put_record(self.tables.log_shards, txn, &key, &meta, "shard log counters")?;
        }
        Ok(())
    }

    /// Removes entries that `retention` no longer keeps, oldest first, at most `limit`
    /// per call (one transaction). Entries are judged by local arrival time against
    /// `now_ms`. The frontier is unchanged: removed entries still count as held.
    pub fn clean_up(
        &self,
        db: &DbName,
        shard: u32,
        retention: Retention,
        now_ms: u64,
        limit: usize,
    ) -> Result<CleanupOutcome> {
        self.write(|txn| {
            let mut log = LogTxn::begin(self, txn, db, shard)?;
            let mut outcome = CleanupOutcome::default();
            let mut doomed = Vec::new();
            let mut bytes_left = log.meta.bytes;
            for item in self.tables.log_entries.prefix_iter(txn, &log.shard_key)? {
                let (key, bytes) = item?;
                let Some(stored) = crate::store::decode_or_skip::<StoredEntry>("log_entries", key, bytes)
                else {
                    continue;
                };
                let too_old =
                    retention.max_age_ms.is_some_and(|age| stored.arrived_ms.saturating_add(age) <= now_ms);
                let too_big = retention.max_bytes.is_some_and(|max| bytes_left > max);
                if !too_old && !too_big {
                    break;
                }
                if doomed.len() == limit {
                    outcome.more = true;
                    break;
                }
                let len = stored.entry.payload.len() as u64;
                bytes_left = bytes_left.saturating_sub(len);
                outcome.removed += 1;
                outcome.removed_bytes += len;
                doomed.push(key.to_vec());
            }
            for key in &doomed {
                self.tables.log_entries.delete(txn, key)?;
            }
            log.meta.entries = log.meta.entries.saturating_sub(outcome.removed);
            log.meta.bytes = bytes_left;
            log.commit(txn)?;
            Ok(outcome)
        })
    }
}
