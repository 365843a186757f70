//! Every decoder of outside bytes, driven from arbitrary input: the fuzz targets in
//! `fuzz/` call these, and `tests/tests/decoder_regressions.rs` replays the inputs kept
//! under `fuzz/regressions/` through them on stable Rust.
//!
//! Each function must return for any input without panicking. Where a decode succeeds,
//! the value must encode again and decode to itself (a value that does not round-trip
//! would change meaning between sites).

use std::fmt::Debug;
use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_gossip::view::{NodeInput, build_view};
use cairn_inventory::codec::{self, CHECKED_HEADER_LEN, FORMAT_VERSION};
use cairn_inventory::plan_machine::{self, SlotChange};
use cairn_inventory::{
    DbRecord, Entry, Frontier, Identity, PendingPlan, Plan, PlanHistoryEntry, ReplicaRecord, SiteId,
};
use cairn_transport::frame::{self, HEADER_LEN};
use cairn_transport::{PullFrame, PullRequest, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the folders
/// under `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", frames),
    ("gossip_values", gossip_values),
    ("stored_records", stored_records),
    ("plan_steps", plan_steps),
];

/// What a site reads off a QUIC stream: a frame header, then the payload as a request,
/// a response, a pull request or a pull frame (and a pull frame's sealed batch).
pub fn frames(data: &[u8]) {
    let Some((header, payload)) = data.split_first_chunk::<HEADER_LEN>() else { return };
    if frame::parse_header(*header, 1 << 20).is_err() {
        return;
    }
    round_trip::<Request>(payload);
    round_trip::<Response>(payload);
    round_trip::<PullRequest>(payload);
    if let Some(PullFrame::Batch(batch)) = round_trip::<PullFrame>(payload)
        && let Ok(entries) = batch.open()
    {
        assert_eq!(entries.len(), batch.count as usize, "a batch opened to another count than it announced");
    }
}

/// What a site reads from gossip: chitchat key/values of up to three nodes, built into
/// a cluster view. Input lines are `key\tvalue`; a value starting with `=` is taken as
/// raw bytes and base64-encoded (so the fuzzer reaches the payload decoders), any other
/// as the text chitchat would carry.
pub fn gossip_values(data: &[u8]) {
    let mut nodes: Vec<NodeInput> = (0..3u8)
        .map(|i| NodeInput {
            site_id: SiteId(u128::from(i) + 1),
            generation: u64::from(i),
            gossip_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + u16::from(i))),
            live: i != 2,
            last_seen_ms: Some(1_000),
            key_values: Vec::new(),
        })
        .collect();
    for (n, line) in data.split(|b| *b == b'\n').enumerate() {
        let Some(tab) = line.iter().position(|b| *b == b'\t') else { continue };
        let key = String::from_utf8_lossy(&line[..tab]).into_owned();
        let value = match &line[tab + 1..] {
            [b'=', raw @ ..] => URL_SAFE_NO_PAD.encode(raw),
            text => String::from_utf8_lossy(text).into_owned(),
        };
        nodes[n % 3].key_values.push((key, value));
    }
    let view = build_view(SiteId(1), &nodes);
    // The view is what `cairn dump --format json` prints: it must serialise.
    serde_json::to_string(&view).expect("a view serialises to JSON");
}

/// What a site reads from its own inventory file (which a disk or an operator may have
/// damaged): every record type in the checked envelope. The first byte picks whether
/// the input is taken whole (checksum included) or as a payload given a valid envelope,
/// so the fuzzer gets past the checksum.
pub fn stored_records(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else { return };
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { checked_envelope(rest) };
    round_trip_checked::<DbRecord>(&bytes);
    round_trip_checked::<ReplicaRecord>(&bytes);
    round_trip_checked::<PendingPlan>(&bytes);
    round_trip_checked::<PlanHistoryEntry>(&bytes);
    round_trip_checked::<Identity>(&bytes);
    round_trip_checked::<Entry>(&bytes);
    round_trip_checked::<Frontier>(&bytes);
}

/// A plan as a site receives it (a `Schedule` request's payload): decoded, offered to an
/// empty slot and to a slot holding another plan, then advanced step by step with the
/// indexes the input gives. The slot must stay consistent: `done` counts the steps
/// taken, and a plan ends exactly when its last step is done.
pub fn plan_steps(data: &[u8]) {
    let Some(plan) = round_trip::<Plan>(data) else { return };
    let total = plan.steps.len();
    let Ok(offered) = plan_machine::offer(None, None, plan.clone(), 1) else { return };
    let SlotChange::Set(mut pending) = offered.slot else { panic!("an accepted plan must fill the slot") };
    // Against a pending plan of the same id and priority, nothing changes.
    let again = plan_machine::offer(Some(&pending), None, plan.clone(), 2).expect("valid once, valid again");
    assert!(matches!(again.slot, SlotChange::Unchanged), "a repeated offer changed the slot");
    // Advance with indexes taken from the input's bytes: stale ones must be no-ops.
    for (now, index) in data.iter().enumerate() {
        let step = u32::from(*index) % (total as u32 + 2);
        let t = plan_machine::advance(Some(&pending), plan.plan_id, step, 3 + now as u64);
        match t.slot {
            SlotChange::Unchanged => assert_ne!(step, pending.done, "the head step did not advance"),
            SlotChange::Set(next) => {
                assert_eq!(next.done, pending.done + 1, "an advance skipped or repeated a step");
                assert_eq!(next.done as usize + next.remaining.len(), total, "steps were lost");
                pending = next;
            }
            SlotChange::Clear => {
                assert_eq!(pending.remaining.len(), 1, "a plan ended before its last step");
                return;
            }
        }
    }
}

/// Decodes `bytes` as a `T` in the plain envelope; a value that decodes must round-trip.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> Option<T> {
    let value: T = codec::decode(bytes).ok()?;
    let again = codec::encode(&value).expect("a decoded value encodes");
    assert_eq!(codec::decode::<T>(&again).as_ref(), Ok(&value), "a value did not round-trip");
    Some(value)
}

/// As [`round_trip`], in the checked envelope.
fn round_trip_checked<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(value) = codec::decode_checked::<T>(bytes) else { return };
    let again = codec::encode_checked(&value).expect("a decoded value encodes");
    assert_eq!(codec::decode_checked::<T>(&again).as_ref(), Ok(&value), "a record did not round-trip");
}

/// `payload` in a checked envelope with a correct version and checksum.
fn checked_envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKED_HEADER_LEN + payload.len());
    out.push(FORMAT_VERSION);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[FORMAT_VERSION]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}
