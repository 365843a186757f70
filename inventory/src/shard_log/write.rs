//! Writing a shard log: local appends, entries from other replicas, frontier raises.
//!
//! Every stored entry is indexed in the same transaction: by origin and seq, by topic,
//! and by producer number. When two copies of one producer's message exist (a retry
//! raced the first attempt at another replica), every replica keeps the copy with the
//! smaller id visible and hides the other, so all replicas come to read the same one.

use std::collections::BTreeMap;
use std::ops::Bound;

use heed::RwTxn;

use super::Frontier;
use super::{
    Append, Appended, AsMessage, Entry, EntryId, FrontierRecord, InsertOutcome, MAX_PAYLOAD, MAX_SEQ,
    ShardLogMeta, Stored, StoredEntryRef,
};
use crate::error::{InventoryError, Result};
use crate::ids::{DbName, SiteId};
use crate::keys;
use crate::records::{ReplicaRecord, ReplicaState};
use crate::store::{Inventory, get_record, now_ms, put_record};
use crate::topics::{MessageKey, ProducerName, ProducerStamp, Topic};

/// The parts of an entry being stored, borrowed.
pub(super) struct EntryParts<'a> {
    pub(super) id: EntryId,
    pub(super) origin_ms: u64,
    pub(super) topic: &'a Topic,
    pub(super) key: Option<&'a MessageKey>,
    pub(super) producer: Option<&'a ProducerStamp>,
    pub(super) payload: &'a [u8],
}

/// One write transaction's view of a shard log: counters and frontiers are read once,
/// changed in memory, and written back at the end.
pub(super) struct LogTxn<'i> {
    inv: &'i Inventory,
    pub(super) shard_key: Vec<u8>,
    pub(super) meta: ShardLogMeta,
    frontiers: BTreeMap<SiteId, FrontierRecord>,
    buf: Vec<u8>,
    /// Reused for entry keys.
    key: Vec<u8>,
    pub(super) now_ms: u64,
}

impl<'i> LogTxn<'i> {
    pub(super) fn begin(inv: &'i Inventory, txn: &RwTxn<'_>, db: &DbName, shard: u32) -> Result<Self> {
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

    /// The id the shard holds a producer's message under, if it holds it.
    fn produced(&self, txn: &RwTxn<'_>, stamp: &ProducerStamp) -> Result<Option<EntryId>> {
        let key = keys::producer(&self.shard_key, &stamp.name, stamp.seq);
        let Some(value) = self.inv.tables.log_producers.get(txn, &key)? else { return Ok(None) };
        let (origin, seq) = keys::split_id_value(value).ok_or_else(|| corrupt("log_producers", &key))?;
        Ok(Some(EntryId { origin, seq }))
    }

    /// Stores one entry under the next arrival number, with its index entries. An entry
    /// whose producer number the shard already holds under a smaller id is stored
    /// hidden; one that comes with a smaller id hides the copy held.
    fn put_entry(&mut self, txn: &mut RwTxn<'_>, entry: EntryParts<'_>) -> Result<()> {
        if entry.payload.len() > MAX_PAYLOAD {
            return Err(InventoryError::PayloadTooLarge { len: entry.payload.len(), max: MAX_PAYLOAD });
        }
        let arrival = self.meta.next_arrival;
        let mut hidden = false;
        if let Some(stamp) = entry.producer {
            match self.produced(txn, stamp)? {
                Some(held) if held < entry.id => hidden = true,
                Some(held) => self.hide(txn, held)?,
                None => {}
            }
            if !hidden {
                let key = keys::producer(&self.shard_key, &stamp.name, stamp.seq);
                self.inv.tables.log_producers.put(
                    txn,
                    &key,
                    &keys::id_value(entry.id.origin, entry.id.seq),
                )?;
            }
        }
        let stored = StoredEntryRef {
            id: entry.id,
            origin_ms: entry.origin_ms,
            topic: entry.topic,
            key: entry.key,
            producer: entry.producer,
            payload: entry.payload,
            arrived_ms: self.now_ms,
        };
        crate::codec::encode_checked_into(&stored, &mut self.buf)
            .map_err(|source| InventoryError::Encode { what: "log entry", source })?;
        // The entry key is the shard key plus the arrival number; reuse one buffer.
        self.key.truncate(self.shard_key.len());
        self.key.extend_from_slice(&arrival.to_be_bytes());
        self.inv.tables.log_entries.put(txn, &self.key, &self.buf)?;
        let by_origin = keys::early(&self.shard_key, entry.id.origin, entry.id.seq);
        self.inv.tables.log_by_origin.put(txn, &by_origin, &keys::by_origin_value(arrival, hidden))?;
        // The empty topic (messages written without one) is not indexed: a read of it
        // goes through `log_by_origin` with the filter.
        if !hidden && !entry.topic.as_str().is_empty() {
            let topic = topic_key(&self.shard_key, entry.topic, entry.id);
            self.inv.tables.log_topics.put(txn, &topic, &arrival.to_be_bytes())?;
        }
        self.meta.next_arrival = arrival.saturating_add(1);
        self.meta.entries = self.meta.entries.saturating_add(1);
        self.meta.bytes = self.meta.bytes.saturating_add(entry.payload.len() as u64);
        if entry.id.origin == self.inv.identity().site_id {
            self.meta.own_seq = self.meta.own_seq.max(entry.id.seq);
        }
        Ok(())
    }

    /// Hides a held entry from reads (another copy of its message has a smaller id).
    fn hide(&mut self, txn: &mut RwTxn<'_>, id: EntryId) -> Result<()> {
        let by_origin = keys::early(&self.shard_key, id.origin, id.seq);
        let Some(value) = self.inv.tables.log_by_origin.get(txn, &by_origin)? else { return Ok(()) };
        let (arrival, _) =
            keys::split_by_origin_value(value).ok_or_else(|| corrupt("log_by_origin", &by_origin))?;
        let entry_key = keys::with_u64(&self.shard_key, arrival);
        if let Some(bytes) = self.inv.tables.log_entries.get(txn, &entry_key)? {
            let stored: super::StoredEntry =
                crate::store::decode_record(bytes, || keys::describe("log_entries", &entry_key))?;
            self.inv.tables.log_topics.delete(txn, &topic_key(&self.shard_key, &stored.entry.topic, id))?;
        }
        self.inv.tables.log_by_origin.put(txn, &by_origin, &keys::by_origin_value(arrival, true))?;
        Ok(())
    }

    /// Moves `origin`'s frontier up to at least `to`, then over any early entries that
    /// now continue it.
    pub(super) fn raise(&mut self, txn: &mut RwTxn<'_>, origin: SiteId, to: u64) -> Result<()> {
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

    pub(super) fn commit(self, txn: &mut RwTxn<'_>) -> Result<()> {
        for (origin, record) in &self.frontiers {
            let key = keys::frontier(&self.shard_key, *origin);
            put_record(self.inv.tables.log_frontiers, txn, &key, record, "frontier")?;
        }
        put_record(self.inv.tables.log_shards, txn, &self.shard_key, &self.meta, "shard log counters")
    }
}

/// An entry's key in the topic index.
pub(super) fn topic_key(shard_key: &[u8], topic: &Topic, id: EntryId) -> Vec<u8> {
    keys::topic_entry(shard_key, id.origin, keys::topic_hash(topic), id.seq)
}

pub(super) fn corrupt(table: &str, key: &[u8]) -> InventoryError {
    InventoryError::Corrupt {
        record: keys::describe(table, key),
        source: crate::codec::CodecError::Decode("malformed index entry".into()),
    }
}

impl Inventory {
    /// Appends messages written at this site, in one durable transaction. Answers their
    /// ids, in order.
    pub fn append<P: AsMessage>(&self, db: &DbName, shard: u32, payloads: &[P]) -> Result<Vec<EntryId>> {
        let stored = self.write(|txn| self.append_in(txn, db, shard, payloads, None))?;
        Ok(stored.into_iter().map(|s| s.id).collect())
    }

    /// [`Self::append`] for a named writer whose first message has number `first`
    /// (the others follow on): messages the shard already holds under the same name and
    /// number are not stored again and are answered as duplicates with their ids.
    pub fn append_produced<P: AsMessage>(
        &self,
        db: &DbName,
        shard: u32,
        payloads: &[P],
        producer: &ProducerName,
        first: u64,
    ) -> Result<Vec<Stored>> {
        self.write(|txn| self.append_in(txn, db, shard, payloads, Some((producer, first))))
    }

    /// Group commit: appends, in one durable transaction, each member's messages to its
    /// shard's log if this site's replica of that shard is ready at that moment (checked
    /// in the same transaction). Answers, per member in order, the ids, or — when the
    /// replica takes no writes — its state here (`None`: no replica). Many concurrent
    /// writers then share one disk sync.
    pub fn append_ready<P: AsMessage>(&self, group: &[Append<'_, P>]) -> Result<Vec<Appended>> {
        self.write(|txn| {
            let mut out = Vec::with_capacity(group.len());
            for member in group {
                let key = keys::shard(member.db, member.shard);
                let replica: Option<ReplicaRecord> =
                    get_record(self.tables.replicas, txn, &key, &keys::describe("replicas", &key))?;
                out.push(match replica.map(|r| r.state) {
                    Some(ReplicaState::Ready) => {
                        Ok(self.append_in(txn, member.db, member.shard, member.payloads, member.producer)?)
                    }
                    other => Err(other),
                });
            }
            Ok(out)
        })
    }

    fn append_in<P: AsMessage>(
        &self,
        txn: &mut RwTxn<'_>,
        db: &DbName,
        shard: u32,
        messages: &[P],
        producer: Option<(&ProducerName, u64)>,
    ) -> Result<Vec<Stored>> {
        let me = self.identity().site_id;
        let mut log = LogTxn::begin(self, txn, db, shard)?;
        let mut ids = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            let stamp = match producer {
                Some((name, first)) => {
                    let seq = first.checked_add(i as u64).ok_or_else(|| InventoryError::InvalidEntry {
                        why: format!("producer {name}'s numbers overflow from {first}"),
                    })?;
                    Some(ProducerStamp { name: name.clone(), seq })
                }
                None => None,
            };
            if let Some(stamp) = &stamp
                && let Some(held) = log.produced(txn, stamp)?
            {
                ids.push(Stored { id: held, duplicate: true });
                continue;
            }
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
            let parts = EntryParts {
                id,
                origin_ms: message.ts_ms().unwrap_or(log.now_ms),
                topic: message.topic(),
                key: message.key(),
                producer: stamp.as_ref(),
                payload: message.payload(),
            };
            log.put_entry(txn, parts)?;
            log.raise(txn, me, seq)?;
            ids.push(Stored { id, duplicate: false });
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
                let parts = EntryParts {
                    id: entry.id,
                    origin_ms: entry.origin_ms,
                    topic: &entry.topic,
                    key: entry.key.as_ref(),
                    producer: entry.producer.as_ref(),
                    payload: &entry.payload,
                };
                log.put_entry(txn, parts)?;
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
}
