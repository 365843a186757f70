//! Positions against a model: a reader that fetches part of a shard from one replica and
//! resumes from its cursor on another (each replica having received the entries in its
//! own random order and batches) gets exactly the matching entries, each once, each
//! origin's in seq order. Also: out-of-range answers after retention, and the copies of
//! a raced idempotent retry.

use std::collections::{BTreeMap, BTreeSet};

use cairn_inventory::{
    ClusterId, DbName, Entry, EntryId, FetchLimits, FetchQuery, FetchStart, Fetched, Frontier, Inventory,
    InventoryConfig, Message, ProducerName, Retention, SiteId, Topic, TopicFilter,
};
use proptest::prelude::*;

const TOPICS: [&str; 5] = ["a/x", "a/y", "b/x", "", "a/x/deep"];
const FILTERS: [&str; 6] = ["#", "a/x", "a/+", "+/x", "a/#", ""];
const ORIGINS: [SiteId; 3] = [SiteId(0xa1), SiteId(0xb2), SiteId(0xc3)];

fn open(dir: &std::path::Path) -> Inventory {
    Inventory::open(dir, ClusterId(3), InventoryConfig::default()).unwrap()
}

fn entry(origin: usize, seq: u64, topic: usize) -> Entry {
    let mut e =
        Entry::plain(EntryId { origin: ORIGINS[origin], seq }, seq, format!("{origin}/{seq}").into_bytes());
    e.topic = Topic::new(TOPICS[topic]).unwrap();
    e
}

fn fetch(inv: &Inventory, db: &DbName, start: &FetchStart, filter: &TopicFilter, max: usize) -> Fetched {
    fetch_scanning(inv, db, start, filter, max, 1 << 20)
}

/// [`fetch`] that looks at no more than `scanned` entries (and topic index blocks).
fn fetch_scanning(
    inv: &Inventory,
    db: &DbName,
    start: &FetchStart,
    filter: &TopicFilter,
    max: usize,
    scanned: usize,
) -> Fetched {
    let limits = FetchLimits { max_entries: max, max_bytes: 1 << 20, max_scanned: scanned };
    inv.fetch(db, 0, FetchQuery { start, filter, since_ms: None }, limits).unwrap().unwrap()
}

/// The universe: per origin, entries 1..=n with a topic each.
fn universe() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(prop::collection::vec(0..TOPICS.len(), 0..14), ORIGINS.len()).prop_map(
        |per_origin| {
            per_origin
                .iter()
                .enumerate()
                .flat_map(|(o, topics)| {
                    topics.iter().enumerate().map(move |(i, t)| entry(o, i as u64 + 1, *t))
                })
                .collect()
        },
    )
}

/// Delivers `entries` to `inv` in the order of `order` (a shuffle), in batches of `batch`.
fn deliver(inv: &Inventory, db: &DbName, entries: &[Entry], order: &[usize], batch: usize) {
    let shuffled: Vec<Entry> = order.iter().map(|i| entries[*i].clone()).collect();
    for chunk in shuffled.chunks(batch.max(1)) {
        inv.insert_remote(db, 0, chunk).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_cursor_resumes_on_any_replica_without_missing_or_repeating(
        entries in universe(),
        seed_a in any::<u64>(),
        seed_b in any::<u64>(),
        batch_a in 1..5usize,
        batch_b in 1..7usize,
        filter in 0..FILTERS.len(),
        page in 1..4usize,
        pages_on_a in 0..6usize,
        delivered_before in any::<prop::sample::Index>(),
    ) {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(dir_a.path()), open(dir_b.path()));
        let db = DbName::new("m").unwrap();
        let filter = TopicFilter::new(FILTERS[filter]).unwrap();
        let shuffle = |seed: u64| {
            let mut order: Vec<usize> = (0..entries.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            order
        };
        let (order_a, order_b) = (shuffle(seed_a), shuffle(seed_b));
        // Replica A has only part of the shard while the reader starts there.
        let cut = if entries.is_empty() { 0 } else { delivered_before.index(entries.len() + 1) };
        deliver(&a, &db, &entries, &order_a[..cut], batch_a);
        let mut got: Vec<EntryId> = Vec::new();
        let mut start = FetchStart::Earliest;
        for _ in 0..pages_on_a {
            let fetched = fetch(&a, &db, &start, &filter, page);
            got.extend(fetched.entries.iter().map(|e| e.id));
            start = FetchStart::After(fetched.cursor);
        }
        // The rest of the shard reaches A after the reader left; B has all of it.
        deliver(&a, &db, &entries, &order_a[cut..], batch_a);
        deliver(&b, &db, &entries, &order_b, batch_b);
        loop {
            let fetched = fetch(&b, &db, &start, &filter, page);
            got.extend(fetched.entries.iter().map(|e| e.id));
            let more = fetched.more;
            start = FetchStart::After(fetched.cursor);
            if !more { break; }
        }
        let want: BTreeSet<EntryId> =
            entries.iter().filter(|e| filter.matches(&e.topic)).map(|e| e.id).collect();
        let got_set: BTreeSet<EntryId> = got.iter().copied().collect();
        prop_assert_eq!(got_set.len(), got.len(), "an entry was read twice: {:?}", got);
        prop_assert_eq!(&got_set, &want);
        let mut last: BTreeMap<SiteId, u64> = BTreeMap::new();
        for id in &got {
            let before = last.insert(id.origin, id.seq).unwrap_or(0);
            prop_assert!(id.seq > before, "origin {} out of order: {:?}", id.origin, got);
        }
        // Read again from where it stopped: nothing new, on either replica.
        prop_assert!(fetch(&a, &db, &start, &filter, 100).entries.is_empty());
        prop_assert!(fetch(&b, &db, &start, &filter, 100).entries.is_empty());
        // From the start, both replicas answer the same set.
        let all_a: BTreeSet<EntryId> =
            fetch(&a, &db, &FetchStart::Earliest, &filter, 10_000).entries.iter().map(|e| e.id).collect();
        prop_assert_eq!(&all_a, &want);
    }
}

#[test]
fn a_position_below_what_retention_removed_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let me = inv.identity().site_id;
    let db = DbName::new("r").unwrap();
    let messages: Vec<Message> =
        (0..10).map(|i| Message::new(Topic::new("t").unwrap(), format!("m{i}").into_bytes())).collect();
    inv.append(&db, 0, &messages).unwrap();
    let all = TopicFilter::all();
    let early = fetch(&inv, &db, &FetchStart::Earliest, &all, 2);
    assert_eq!(early.cursor, Frontier([(me, 2)].into()));
    let retention = Retention { max_age_ms: Some(1), max_bytes: None };
    let removed = inv.clean_up(&db, 0, retention, cairn_inventory::now_ms() + 10_000, 5).unwrap();
    assert_eq!(removed.removed, 5);
    let query = FetchQuery { start: &FetchStart::After(early.cursor.clone()), filter: &all, since_ms: None };
    let limits = FetchLimits { max_entries: 100, max_bytes: 1 << 20, max_scanned: 1 << 20 };
    let gone = inv.fetch(&db, 0, query, limits).unwrap().unwrap_err();
    assert_eq!((gone.origin, gone.wanted, gone.starts_at), (me, 3, 6));
    assert_eq!(gone.start, Frontier([(me, 5)].into()));
    assert!(gone.to_string().contains("the log now starts at seq 6"), "{gone}");
    // Reading from where the log starts skips, knowingly, what is gone.
    let rest = fetch(&inv, &db, &FetchStart::After(gone.start), &all, 100);
    assert_eq!(rest.entries.iter().map(|e| e.id.seq).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    // The exact-topic path says the same.
    let exact = TopicFilter::new("t").unwrap();
    let query = FetchQuery { start: &FetchStart::After(early.cursor), filter: &exact, since_ms: None };
    assert!(inv.fetch(&db, 0, query, limits).unwrap().is_err());
    // From the earliest, nothing is out of range.
    assert_eq!(fetch(&inv, &db, &FetchStart::Earliest, &all, 100).entries.len(), 5);
}

#[test]
fn a_producer_retry_is_stored_once_and_a_raced_copy_is_read_once_everywhere() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));
    let db = DbName::new("p").unwrap();
    let name = ProducerName::new("writer-1").unwrap();
    let m = |s: &str| Message::new(Topic::new("t").unwrap(), s.as_bytes().to_vec());
    let first = a.append_produced(&db, 0, &[m("one"), m("two")], &name, 7).unwrap();
    assert!(first.iter().all(|s| !s.duplicate));
    // Retried at the same replica: answered with the ids it has, nothing stored.
    let again = a.append_produced(&db, 0, &[m("one"), m("two"), m("three")], &name, 7).unwrap();
    assert_eq!(
        again[..2].iter().map(|s| (s.id, s.duplicate)).collect::<Vec<_>>(),
        vec![(first[0].id, true), (first[1].id, true)]
    );
    assert!(!again[2].duplicate);
    // A retry that raced: B stored #7 under its own id before A's copy reached it.
    let raced = b.append_produced(&db, 0, &[m("one")], &name, 7).unwrap();
    assert!(!raced[0].duplicate);
    let all = TopicFilter::all();
    let everything = |inv: &Inventory| fetch(inv, &db, &FetchStart::Earliest, &all, 100).entries;
    let from_a = everything(&a);
    let from_b = everything(&b);
    b.insert_remote(&db, 0, &from_a).unwrap();
    a.insert_remote(&db, 0, &from_b).unwrap();
    let ids = |inv: &Inventory| everything(inv).iter().map(|e| e.id).collect::<BTreeSet<_>>();
    assert_eq!(ids(&a), ids(&b), "both replicas show the same copies");
    let ones = everything(&a).iter().filter(|e| e.payload == b"one").count();
    assert_eq!(ones, 1, "one copy of the raced message is read");
    assert_eq!(everything(&a).len(), 3);
    // The exact-topic path hides it too.
    let t = TopicFilter::new("t").unwrap();
    assert_eq!(fetch(&b, &db, &FetchStart::Earliest, &t, 100).entries.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Logs long enough that the topic index spans several blocks per origin (4,096
    /// seqs each), read one exact topic page by page on one replica and resumed on
    /// another, with fetches that may stop partway through the blocks: every matching
    /// entry, once, in each origin's seq order.
    #[test]
    fn a_topic_read_across_index_blocks_resumes_on_another_replica(
        lengths in prop::collection::vec(0..9000u64, ORIGINS.len()),
        stride in 1..7u64,
        seed in any::<u64>(),
        page in 1..400usize,
        pages_on_a in 0..8usize,
        budget in 1..8usize,
    ) {
        // A small budget makes fetches stop partway through the blocks (the last: none).
        let budget = if budget == 7 { 1 << 20 } else { budget };
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(dir_a.path()), open(dir_b.path()));
        let db = DbName::new("long").unwrap();
        // Topic 0 ("a/x") every `stride`-th seq, shifted per origin; the rest elsewhere.
        let entries: Vec<Entry> = lengths
            .iter()
            .enumerate()
            .flat_map(|(o, &n)| {
                (1..=n).map(move |seq| {
                    let topic = if (seq + o as u64).is_multiple_of(stride) { 0 } else { 1 + (seq % 3) as usize };
                    entry(o, seq, topic)
                })
            })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        deliver(&a, &db, &entries, &order, 500);
        let natural: Vec<usize> = (0..entries.len()).collect();
        deliver(&b, &db, &entries, &natural, 700);
        let filter = TopicFilter::new("a/x").unwrap();
        let mut got: Vec<EntryId> = Vec::new();
        let mut start = FetchStart::Earliest;
        for _ in 0..pages_on_a {
            let fetched = fetch_scanning(&a, &db, &start, &filter, page, budget);
            got.extend(fetched.entries.iter().map(|e| e.id));
            start = FetchStart::After(fetched.cursor);
        }
        loop {
            let fetched = fetch_scanning(&b, &db, &start, &filter, page, budget);
            got.extend(fetched.entries.iter().map(|e| e.id));
            start = FetchStart::After(fetched.cursor);
            if !fetched.more { break; }
        }
        let want: BTreeSet<EntryId> = entries.iter().filter(|e| filter.matches(&e.topic)).map(|e| e.id).collect();
        let got_set: BTreeSet<EntryId> = got.iter().copied().collect();
        prop_assert_eq!(got_set.len(), got.len(), "an entry was read twice");
        prop_assert_eq!(&got_set, &want);
        let mut last: BTreeMap<SiteId, u64> = BTreeMap::new();
        for id in &got {
            let before = last.insert(id.origin, id.seq).unwrap_or(0);
            prop_assert!(id.seq > before, "origin {} out of order", id.origin);
        }
        prop_assert!(fetch(&a, &db, &start, &filter, 100).entries.is_empty());
    }
}
