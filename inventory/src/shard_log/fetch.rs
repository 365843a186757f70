//! Reading a shard log by position: positions valid on every replica, topic filters.
//!
//! A reader's position in a shard is a [`Frontier`]: per origin, the seq up to which it
//! has seen every entry of that origin that its filter matches. Any replica can resume
//! from it, because entry ids are the same on every replica: a fetch answers, per origin,
//! the matching entries above the reader's seq and at or below the replica's own
//! frontier (below it the replica holds everything, so nothing can be missing in
//! between). Each origin's entries come in seq order; the origins are merged in this
//! replica's arrival order. The position the fetch answers covers everything it looked
//! at, matched or not, so a reader of a rare topic does not look at the same entries
//! again.
//!
//! An exact topic is read through the topic index (origin and seq under the topic's
//! hash), so it costs what its own entries cost, not a scan of the shard; other filters,
//! and the empty topic (not indexed: it is what topic-less writes carry), go through the
//! by-origin index and look at every entry.
//!
//! When retention (or a catch-up from a source that no longer held them) left out
//! entries a position still needs, the fetch answers [`OutOfRange`] with where the log
//! now starts, never a silent skip.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use heed::types::Bytes;

use super::{Entry, FetchStart, Frontier, OutOfRange, StoredEntry};
use crate::error::Result;
use crate::ids::{DbName, SiteId};
use crate::keys;
use crate::store::{Inventory, Table, decode_record};
use crate::topics::TopicFilter;

/// What a fetch looks for.
#[derive(Debug, Clone, Copy)]
pub struct FetchQuery<'a> {
    /// Where to start.
    pub start: &'a FetchStart,
    /// Which topics.
    pub filter: &'a TopicFilter,
    /// Only entries stamped at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Stop after this many entries.
    pub max_entries: usize,
    /// Stop before an entry that would take the payload bytes past this (the first
    /// entry is always taken).
    pub max_bytes: usize,
    /// Stop after looking at this many entries, matched or not.
    pub max_scanned: usize,
}

/// A fetch's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Matching entries: each origin's in seq order, origins merged by arrival here.
    pub entries: Vec<Entry>,
    /// The position after them, to fetch from next (here or on another replica).
    pub cursor: Frontier,
    /// Whether this replica holds more beyond `cursor` right now (a limit stopped it).
    pub more: bool,
}

/// One origin's index entries still to look at, in seq order.
struct Source<'t> {
    origin: SiteId,
    /// The replica's frontier for the origin.
    held: u64,
    /// The range being read (none yet, for a topic read before its first block).
    iter: Option<heed::RoRange<'t, Bytes, Bytes>>,
    /// For a topic read, the blocks of the topic index still to look at.
    blocks: Option<TopicBlocks<'t>>,
    /// Whether the topic read stopped at the fetch's budget with blocks left: the
    /// reader has then seen every match up to [`TopicBlocks::walked_to`] only.
    paused: bool,
    /// The next index entry: (seq, arrival, hidden).
    head: Option<(u64, u64, bool)>,
}

/// A topic read walks the topic index one block at a time: in each block, the range of
/// the topic's entries (see [`keys::topic_entry`]).
struct TopicBlocks<'t> {
    txn: &'t heed::RoTxn<'t, heed::WithoutTls>,
    table: Table,
    shard_key: Vec<u8>,
    origin: SiteId,
    hash: u64,
    /// The first seq still to look at (none once all are), and the last.
    from: Option<u64>,
    to: u64,
}

impl<'t> TopicBlocks<'t> {
    /// The range of the topic's entries in the next block, if any is left.
    fn next_range(&mut self) -> Result<Option<heed::RoRange<'t, Bytes, Bytes>>> {
        let Some(from) = self.from.filter(|_| self.has_more()) else { return Ok(None) };
        let (_, block_end) = keys::topic_block_seqs(keys::topic_block(from));
        let upto = block_end.min(self.to);
        let first = keys::topic_entry(&self.shard_key, self.origin, self.hash, from);
        let last = keys::topic_entry(&self.shard_key, self.origin, self.hash, upto);
        self.from = upto.checked_add(1);
        let range = (Bound::Included(&first[..]), Bound::Included(&last[..]));
        Ok(Some(self.table.range(self.txn, &range)?))
    }

    /// Whether seqs are left to look at.
    fn has_more(&self) -> bool {
        self.from.is_some_and(|from| from <= self.to)
    }

    /// The seq up to which every block has been looked at.
    fn walked_to(&self) -> u64 {
        self.from.map_or(self.to, |from| from - 1)
    }
}

impl<'t> Source<'t> {
    /// Once it has no head: the seq up to which the reader has seen every match of this
    /// origin (the replica's frontier, unless a topic read paused).
    fn looked_to(&self) -> u64 {
        match &self.blocks {
            Some(blocks) if self.paused => blocks.walked_to(),
            _ => self.held,
        }
    }

    /// Moves to the next index entry. A topic read counts each block it opens in
    /// `scanned`, and once that reaches `max_scanned` it pauses rather than open
    /// another (after one at least, so every fetch gets somewhere).
    fn advance(&mut self, scanned: &mut usize, max_scanned: usize) -> Result<()> {
        let mut opened = false;
        loop {
            if let Some((key, value)) = self.iter.as_mut().and_then(Iterator::next).transpose()? {
                let seq = key.len().checked_sub(8).and_then(|at| keys::u64_suffix(&key[at..]));
                let value = if value.len() == 8 {
                    keys::u64_suffix(value).map(|arrival| (arrival, false))
                } else {
                    keys::split_by_origin_value(value)
                };
                self.head = match (seq, value) {
                    (Some(seq), Some((arrival, hidden))) => Some((seq, arrival, hidden)),
                    _ => return Err(super::write::corrupt("log index", key)),
                };
                return Ok(());
            }
            if opened && *scanned >= max_scanned && self.blocks.as_ref().is_some_and(TopicBlocks::has_more) {
                self.paused = true;
                self.head = None;
                return Ok(());
            }
            match self.blocks.as_mut().map(TopicBlocks::next_range).transpose()?.flatten() {
                Some(range) => {
                    self.iter = Some(range);
                    *scanned += 1;
                    opened = true;
                }
                None => {
                    self.head = None;
                    return Ok(());
                }
            }
        }
    }
}

impl Inventory {
    /// Reads, from one shard's log, the entries `query` asks for beyond its start, within
    /// `limits`. Answers [`OutOfRange`] when the start needs entries retention removed.
    pub fn fetch(
        &self,
        db: &DbName,
        shard: u32,
        query: FetchQuery<'_>,
        limits: FetchLimits,
    ) -> Result<std::result::Result<Fetched, OutOfRange>> {
        let shard_key = keys::shard(db, shard);
        self.read(|txn| {
            let held = self.frontier_in(txn, &shard_key)?;
            let first_held = |origin: SiteId, above: u64| -> Result<Option<u64>> {
                let from = keys::early(&shard_key, origin, above.saturating_add(1));
                let to = keys::early(&shard_key, origin, u64::MAX);
                let range = (Bound::Included(&from[..]), Bound::Included(&to[..]));
                match self.tables.log_by_origin.range(txn, &range)?.next().transpose()? {
                    Some((key, _)) => Ok(keys::u64_suffix(&key[from.len() - 8..])),
                    None => Ok(None),
                }
            };
            // Where each origin starts.
            let mut cursor = match query.start {
                FetchStart::Earliest => Frontier::default(),
                FetchStart::After(position) => position.clone(),
            };
            let mut begins = Vec::with_capacity(held.len());
            for (origin, upto) in held.iter() {
                let begin = match query.start {
                    FetchStart::Earliest => first_held(origin, 0)?.map_or(upto, |seq| seq - 1),
                    FetchStart::After(position) => position.get(origin),
                };
                if begin >= upto {
                    continue;
                }
                if matches!(query.start, FetchStart::After(_)) {
                    let next = first_held(origin, begin)?;
                    if next.is_none_or(|seq| seq > begin + 1) {
                        let starts_at = next.unwrap_or(upto + 1);
                        let start = self.log_start_position(txn, &shard_key, &held, query.start)?;
                        return Ok(Err(OutOfRange { origin, wanted: begin + 1, starts_at, start }));
                    }
                }
                begins.push((origin, begin, upto));
            }
            // Per origin, the by-origin index's range, or the topic index's blocks.
            // The empty topic has no index entries (see `write`).
            let topic_hash = query
                .filter
                .exact()
                .filter(|topic| !topic.as_str().is_empty())
                .map(|topic| keys::topic_hash(&topic));
            // Entries, and topic index blocks, looked at; whether a topic read paused.
            let (mut scanned, mut paused) = (0usize, false);
            let mut sources = Vec::with_capacity(begins.len());
            for (origin, begin, upto) in begins {
                let (iter, blocks) = match topic_hash {
                    Some(hash) => {
                        let blocks = TopicBlocks {
                            txn,
                            table: self.tables.log_topics,
                            shard_key: shard_key.clone(),
                            origin,
                            hash,
                            from: Some(begin + 1),
                            to: upto,
                        };
                        (None, Some(blocks))
                    }
                    None => {
                        let from = keys::early(&shard_key, origin, begin + 1);
                        let to = keys::early(&shard_key, origin, upto);
                        let range = (Bound::Included(&from[..]), Bound::Included(&to[..]));
                        (Some(self.tables.log_by_origin.range(txn, &range)?), None)
                    }
                };
                let mut source = Source { origin, held: upto, iter, blocks, paused: false, head: None };
                source.advance(&mut scanned, limits.max_scanned)?;
                if source.head.is_none() {
                    paused |= source.paused;
                    cursor.0.insert(origin, source.looked_to());
                } else {
                    sources.push(source);
                }
            }
            // Merge by arrival.
            let mut heap: BinaryHeap<Reverse<(u64, usize)>> = sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.head.map(|(_, arrival, _)| Reverse((arrival, i))))
                .collect();
            // Index entries taken off the heap: the budget stops a fetch only after one,
            // so a fetch always gets somewhere even when opening blocks used it up.
            let (mut entries, mut bytes, mut taken) = (Vec::new(), 0usize, 0usize);
            while let Some(&Reverse((arrival, i))) = heap.peek() {
                if entries.len() >= limits.max_entries
                    || bytes >= limits.max_bytes
                    || (taken > 0 && scanned >= limits.max_scanned)
                {
                    break;
                }
                let source = &mut sources[i];
                let (seq, _, hidden) = source.head.expect("sources in the heap have a head");
                if !hidden {
                    let key = keys::with_u64(&shard_key, arrival);
                    if let Some(value) = self.tables.log_entries.get(txn, &key)? {
                        let stored: StoredEntry =
                            decode_record(value, || keys::describe("log_entries", &key))?;
                        let entry = stored.entry;
                        let wanted = entry.id.origin == source.origin
                            && entry.id.seq == seq
                            && query.filter.matches(&entry.topic)
                            && query.since_ms.is_none_or(|since| entry.origin_ms >= since);
                        if wanted {
                            if !entries.is_empty()
                                && bytes.saturating_add(entry.payload.len()) > limits.max_bytes
                            {
                                break;
                            }
                            bytes = bytes.saturating_add(entry.payload.len());
                            entries.push(entry);
                        }
                    }
                }
                scanned += 1;
                taken += 1;
                heap.pop();
                cursor.0.insert(source.origin, seq);
                source.advance(&mut scanned, limits.max_scanned)?;
                match source.head {
                    Some((_, next_arrival, _)) => heap.push(Reverse((next_arrival, i))),
                    None => {
                        paused |= source.paused;
                        cursor.0.insert(source.origin, source.looked_to());
                    }
                }
            }
            Ok(Ok(Fetched { entries, cursor, more: paused || !heap.is_empty() }))
        })
    }

    /// Per origin, the position just below the oldest entry held (the replica's frontier
    /// when it holds none), never below `start`'s.
    fn log_start_position(
        &self,
        txn: &heed::RoTxn<'_, heed::WithoutTls>,
        shard_key: &[u8],
        held: &Frontier,
        start: &FetchStart,
    ) -> Result<Frontier> {
        let mut log_start = match start {
            FetchStart::Earliest => Frontier::default(),
            FetchStart::After(position) => position.clone(),
        };
        for (origin, upto) in held.iter() {
            let prefix = keys::frontier(shard_key, origin);
            let first = match self.tables.log_by_origin.prefix_iter(txn, &prefix)?.next().transpose()? {
                Some((key, _)) => keys::u64_suffix(&key[prefix.len()..]),
                None => None,
            };
            let start_seq = first.map_or(upto, |seq| seq - 1);
            if start_seq > log_start.get(origin) {
                log_start.0.insert(origin, start_seq);
            }
        }
        Ok(log_start)
    }
}
