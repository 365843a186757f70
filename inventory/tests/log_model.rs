//! Shard logs against a model: random interleavings of local appends and remote batches
//! (with duplicates and reorderings) give the same entry set and frontier as a set.

use std::collections::{BTreeMap, BTreeSet};

use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Entry, EntryId, Frontier, Hlc, Inventory, InventoryConfig,
    Retention, SiteId,
};
use proptest::prelude::*;

const REMOTES: [SiteId; 2] = [SiteId(0xa), SiteId(0xb)];

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    /// Remote entries as (origin index, seq), in this order, duplicates allowed.
    Remote(Vec<(usize, u64)>),
    /// Echo some of this site's own entries back (as a peer would during follow).
    Echo(Vec<prop::sample::Index>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..6usize).prop_map(Op::Append),
        5 => prop::collection::vec((0..2usize, 1..25u64), 1..12).prop_map(Op::Remote),
        1 => prop::collection::vec(any::<prop::sample::Index>(), 1..4).prop_map(Op::Echo),
        1 => Just(Op::Reopen),
    ]
}

fn payload(origin: SiteId, seq: u64) -> Vec<u8> {
    format!("{origin}/{seq}").into_bytes()
}

fn remote(origin: SiteId, seq: u64) -> Entry {
    Entry::plain(EntryId { origin, seq }, seq, payload(origin, seq))
}

fn open(dir: &std::path::Path) -> Inventory {
    Inventory::open(dir, ClusterId(2), InventoryConfig::default()).unwrap()
}

/// The model's frontier: per origin, the largest k with 1..=k all held.
fn model_frontier(held: &BTreeSet<EntryId>) -> Frontier {
    let mut frontier = BTreeMap::new();
    for id in held {
        let k = frontier.entry(id.origin).or_insert(0);
        if id.seq == *k + 1 {
            *k = id.seq;
        }
    }
    frontier.retain(|_, k| *k > 0);
    Frontier(frontier)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn logs_merge_like_a_set(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(dir.path());
        let me = inv.identity().site_id;
        let db = DbName::new("log").unwrap();
        let mut held: BTreeSet<EntryId> = BTreeSet::new();
        let mut own = 0u64;
        let mut reader_cursor = 0u64;
        let mut read_so_far: Vec<EntryId> = Vec::new();
        for op in ops {
            match op {
                Op::Append(n) => {
                    let payloads: Vec<Vec<u8>> = (1..=n as u64).map(|k| payload(me, own + k)).collect();
                    let ids = inv.append(&db, 0, &payloads).unwrap();
                    let want: Vec<EntryId> = (1..=n as u64).map(|k| EntryId { origin: me, seq: own + k }).collect();
                    prop_assert_eq!(&ids, &want);
                    own += n as u64;
                    held.extend(ids);
                }
                Op::Remote(batch) => {
                    let entries: Vec<Entry> = batch.iter().map(|(o, s)| remote(REMOTES[*o], *s)).collect();
                    let new = entries.iter().map(|e| e.id).collect::<BTreeSet<_>>().difference(&held).count() as u64;
                    let holds = inv.holds_all(&db, 0, entries.iter().map(|e| e.id)).unwrap();
                    prop_assert_eq!(holds, new == 0, "holds_all says whether the batch adds nothing");
                    let outcome = inv.insert_remote(&db, 0, &entries).unwrap();
                    prop_assert_eq!(outcome.inserted, new);
                    prop_assert_eq!(outcome.inserted + outcome.duplicates, entries.len() as u64);
                    held.extend(entries.iter().map(|e| e.id));
                }
                Op::Echo(picks) => {
                    if own == 0 { continue }
                    let entries: Vec<Entry> = picks.iter().map(|i| remote(me, i.index(own as usize) as u64 + 1)).collect();
                    prop_assert!(inv.holds_all(&db, 0, entries.iter().map(|e| e.id)).unwrap());
                    let outcome = inv.insert_remote(&db, 0, &entries).unwrap();
                    prop_assert_eq!(outcome.inserted, 0);
                }
                Op::Reopen => {
                    drop(inv);
                    inv = open(dir.path());
                }
            }
            prop_assert_eq!(inv.frontier(&db, 0).unwrap(), model_frontier(&held));

            // A reader that keeps pulling sees every entry exactly once, in arrival order.
            let batch = inv.read_log(&db, 0, reader_cursor, 7).unwrap();
            let mut last = None;
            for e in &batch.entries {
                prop_assert!(e.arrival >= reader_cursor && last.is_none_or(|l| e.arrival > l));
                prop_assert_eq!(&e.entry.payload, &payload(e.entry.id.origin, e.entry.id.seq));
                last = Some(e.arrival);
                read_so_far.push(e.entry.id);
            }
            reader_cursor = batch.next;
        }
        // Drain the reader, then compare with the model.
        loop {
            let batch = inv.read_log(&db, 0, reader_cursor, 100).unwrap();
            if batch.entries.is_empty() { break }
            read_so_far.extend(batch.entries.iter().map(|e| e.entry.id));
            reader_cursor = batch.next;
        }
        let all: Vec<EntryId> = inv.read_log(&db, 0, 0, usize::MAX).unwrap().entries.into_iter().map(|e| e.entry.id).collect();
        prop_assert_eq!(&read_so_far, &all, "a pulling reader saw what a full read sees");
        let set: BTreeSet<EntryId> = all.iter().copied().collect();
        prop_assert_eq!(set.len(), all.len(), "no duplicates");
        prop_assert_eq!(&set, &held);
        let stats = inv.log_stats(&db, 0).unwrap();
        prop_assert_eq!(stats.entries, held.len() as u64);
        prop_assert!(inv.verify().unwrap().corrupt.is_empty());
    }
}

fn with_db(inv: &Inventory, retention: Retention) -> DbName {
    let name = DbName::new("ret").unwrap();
    inv.put_db(&DbRecord {
        seal: None,
        name: name.clone(),
        settings: DbSettings::new(1, 1, retention).expect("settings in range"),
        created: Hlc::default(),
        origin: SiteId(1),
        changed: Hlc::default(),
        dropped: false,
        supersedes: None,
    })
    .unwrap();
    name
}

#[test]
fn own_seqs_are_never_reused_after_the_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let db = DbName::new("d").unwrap();
    inv.append(&db, 0, &[b"a", b"b", b"c"]).unwrap();
    let arrival_before = inv.log_stats(&db, 0).unwrap().next_arrival;
    inv.drop_log(&db, 0).unwrap();
    assert_eq!(inv.log_stats(&db, 0).unwrap().entries, 0);
    assert!(inv.frontier(&db, 0).unwrap().0.is_empty());
    let ids = inv.append(&db, 0, &[b"d"]).unwrap();
    assert_eq!(ids[0].seq, 4, "a dropped log must not reuse seqs that peers may still hold");
    assert!(inv.log_stats(&db, 0).unwrap().next_arrival > arrival_before);
}

#[test]
fn a_raised_frontier_counts_expired_entries_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let db = DbName::new("d").unwrap();
    let a = REMOTES[0];
    // Only a replica's log takes a raised frontier.
    let refused = inv.raise_frontier(&db, 0, &Frontier([(a, 10)].into())).unwrap_err();
    assert!(matches!(refused, cairn_inventory::InventoryError::NoReplica { .. }), "{refused}");
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 0);
    let record = DbRecord {
        seal: None,
        name: db.clone(),
        settings: DbSettings::new(1, 1, Retention::default()).expect("settings in range"),
        created: Hlc::default(),
        origin: a,
        changed: Hlc::default(),
        dropped: false,
        supersedes: None,
    };
    inv.put_db(&record).unwrap();
    inv.set_replica(&db, 0, cairn_inventory::ReplicaState::Ready).unwrap();
    // Entries 1..=10 expired at the source; 11 and 12 arrive (12 first).
    inv.insert_remote(&db, 0, &[remote(a, 12)]).unwrap();
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 0);
    inv.raise_frontier(&db, 0, &Frontier([(a, 10)].into())).unwrap();
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 10);
    inv.insert_remote(&db, 0, &[remote(a, 11), remote(a, 5), remote(a, 12)]).unwrap();
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 12);
    assert_eq!(inv.log_stats(&db, 0).unwrap().entries, 2);
    // Raising over an early entry absorbs it.
    inv.insert_remote(&db, 0, &[remote(a, 20)]).unwrap();
    inv.raise_frontier(&db, 0, &Frontier([(a, 25)].into())).unwrap();
    let outcome = inv.insert_remote(&db, 0, &[remote(a, 20), remote(a, 26)]).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 26);
}

#[test]
fn seq_zero_and_oversized_payloads_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let db = DbName::new("d").unwrap();
    let err = inv.insert_remote(&db, 0, &[remote(REMOTES[0], 1), remote(REMOTES[0], 0)]).unwrap_err();
    assert!(err.to_string().contains("seq 0"), "{err}");
    let err = inv.append(&db, 0, &[vec![0u8; cairn_inventory::MAX_PAYLOAD + 1]]).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert_eq!(inv.log_stats(&db, 0).unwrap().entries, 0);
}

#[test]
fn retention_by_size_cuts_the_oldest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let retention = Retention { max_age_ms: None, max_bytes: Some(50) };
    let db = with_db(&inv, retention);
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 10]).collect();
    inv.append(&db, 0, &payloads).unwrap();
    let frontier = inv.frontier(&db, 0).unwrap();
    let out = inv.clean_up(&db, 0, retention, cairn_inventory::now_ms(), 3).unwrap();
    assert_eq!((out.removed, out.more), (3, true));
    let out = inv.clean_up(&db, 0, retention, cairn_inventory::now_ms(), 100).unwrap();
    assert_eq!((out.removed, out.removed_bytes, out.more), (2, 20, false));
    let left = inv.read_log(&db, 0, 0, 100).unwrap().entries;
    assert_eq!(left.iter().map(|e| e.entry.payload[0]).collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    assert_eq!(inv.log_stats(&db, 0).unwrap().bytes, 50);
    assert_eq!(inv.frontier(&db, 0).unwrap(), frontier, "removed entries still count as held");
}

#[test]
fn retention_by_age_uses_arrival_time() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let retention = Retention { max_age_ms: Some(60_000), max_bytes: None };
    let db = with_db(&inv, retention);
    inv.append(&db, 0, &[b"x", b"y"]).unwrap();
    let now = cairn_inventory::now_ms();
    assert_eq!(inv.clean_up(&db, 0, retention, now, 100).unwrap().removed, 0);
    assert_eq!(inv.clean_up(&db, 0, retention, now + 61_000, 100).unwrap().removed, 2);
    assert_eq!(inv.log_stats(&db, 0).unwrap().entries, 0);
    // New entries keep numbering above what was read before.
    inv.append(&db, 0, &[b"z"]).unwrap();
    assert_eq!(inv.read_log(&db, 0, 2, 10).unwrap().entries.len(), 1);
}

#[test]
fn seqs_beyond_the_maximum_are_refused_and_a_raised_own_frontier_cannot_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let db = with_db(&inv, Retention::default());
    inv.set_replica(&db, 0, cairn_inventory::ReplicaState::Ready).unwrap();
    let a = REMOTES[0];
    for seq in [cairn_inventory::MAX_SEQ + 1, u64::MAX] {
        let err = inv.insert_remote(&db, 0, &[remote(a, seq)]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = inv.raise_frontier(&db, 0, &Frontier([(a, seq)].into())).unwrap_err();
        assert!(err.to_string().contains("above the maximum"), "{err}");
    }
    assert_eq!(inv.frontier(&db, 0).unwrap().get(a), 0, "nothing of the refused batches was kept");
    // A peer raises our own origin's frontier to the very top: our next write is refused
    // with a clear error instead of overflowing (debug) or wrapping to seq 0 (release).
    let me = inv.identity().site_id;
    inv.raise_frontier(&db, 0, &Frontier([(me, cairn_inventory::MAX_SEQ)].into())).unwrap();
    let err = inv.append(&db, 0, &[b"x"]).unwrap_err();
    assert!(err.to_string().contains("reached the maximum"), "{err}");
}

#[test]
fn frontiers_from_outside_are_bounded_when_decoded() {
    use cairn_inventory::{MAX_FRONTIER_ORIGINS, MAX_SEQ, codec};
    // As pairs, the way a peer could list them: too many, a seq too high, one twice.
    let many: Vec<(SiteId, u64)> = (0..=MAX_FRONTIER_ORIGINS as u128).map(|i| (SiteId(i), 1)).collect();
    let pairs_as_map = |pairs: &[(SiteId, u64)]| {
        // A map and a list of pairs have the same encoding.
        codec::encode(&pairs.to_vec()).unwrap()
    };
    let err = codec::decode::<Frontier>(&pairs_as_map(&many)).unwrap_err().to_string();
    assert!(err.contains("at most 16384 origins"), "{err}");
    let err = codec::decode::<Frontier>(&pairs_as_map(&[(SiteId(1), MAX_SEQ + 1)])).unwrap_err().to_string();
    assert!(err.contains("above the maximum"), "{err}");
    let err =
        codec::decode::<Frontier>(&pairs_as_map(&[(SiteId(1), 1), (SiteId(1), 2)])).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let ok = Frontier([(SiteId(1), 5), (SiteId(2), MAX_SEQ)].into());
    assert_eq!(codec::decode::<Frontier>(&codec::encode(&ok).unwrap()).unwrap(), ok);
    // JSON (a dump file) lists pairs and is bounded the same way.
    let json = serde_json::to_string(&ok).unwrap();
    assert!(json.starts_with("[["), "{json}");
    assert_eq!(serde_json::from_str::<Frontier>(&json).unwrap(), ok);
    let bad = format!("[[\"{}\", {}]]", SiteId(1), u64::MAX);
    assert!(serde_json::from_str::<Frontier>(&bad).unwrap_err().to_string().contains("above the maximum"));
}

#[test]
fn a_bounded_read_decodes_no_more_than_its_answer_carries() {
    let dir = tempfile::tempdir().unwrap();
    let inv = open(dir.path());
    let db = with_db(&inv, Retention::default());
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 1000]).collect();
    inv.append(&db, 0, &payloads).unwrap();
    let batch = inv.read_log_within(&db, 0, 0, 10_000, 10_000).unwrap();
    assert!((8..=10).contains(&batch.entries.len()), "{} entries for 10 kB", batch.entries.len());
    assert_eq!(batch.next, batch.entries.last().unwrap().arrival + 1);
    // One entry bigger than the bound still comes alone, so a read always moves on.
    let one = inv.read_log_within(&db, 0, 5, 10_000, 1).unwrap();
    assert_eq!((one.entries.len(), one.next), (1, 6));
    assert_eq!(inv.log_start(&db, 0).unwrap(), 0);
    inv.clean_up(
        &db,
        0,
        Retention { max_age_ms: None, max_bytes: Some(50_000) },
        cairn_inventory::now_ms(),
        1000,
    )
    .unwrap();
    assert_eq!(inv.log_start(&db, 0).unwrap(), 50, "the oldest entry left is the 51st");
}
