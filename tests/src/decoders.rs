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
use cairn_gossip::GossipName;
use cairn_gossip::signed::{GossipedNode, GossipedValue, Verifier};
use cairn_gossip::view::{NodeInput, ViewContext, build_view};
use cairn_inventory::codec::{self, CHECKED_HEADER_LEN, FORMAT_VERSION};
use cairn_inventory::plan_machine::{self, SlotChange};
use cairn_inventory::{
    DbRecord, Entry, Frontier, Identity, PendingPlan, Plan, PlanHistoryEntry, ReplicaRecord, SiteId,
};
use cairn_transport::frame::{self, HEADER_LEN};
use cairn_transport::{Credit, PullAck, PullFrame, PullRequest, Request, Response, SubscriptionFrame};
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
/// a response, a pull request, a pull frame (and a pull frame's sealed batch), a pull
/// acknowledgement, a subscription frame or a subscriber's credit.
pub fn frames(data: &[u8]) {
    let Some((header, payload)) = data.split_first_chunk::<HEADER_LEN>() else { return };
    if frame::parse_header(*header, 1 << 20).is_err() {
        return;
    }
    round_trip::<Request>(payload);
    round_trip::<Response>(payload);
    round_trip::<PullRequest>(payload);
    round_trip::<PullAck>(payload);
    round_trip::<SubscriptionFrame>(payload);
    round_trip::<Credit>(payload);
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
            forged: Vec::new(),
            unverified: None,
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
    let view = build_view(SiteId(1), &nodes, &ViewContext::at(2_000));
    // The view is what `cairn dump --format json` prints: it must serialise.
    serde_json::to_string(&view).expect("a view serialises to JSON");
    // The same values as chitchat holds them, before the view: through the signature,
    // certificate and seal checks (a value after its last `.` is taken as a signature).
    let gossiped: Vec<GossipedNode> = nodes
        .iter()
        .map(|n| GossipedNode {
            name: GossipName::of(n.site_id),
            generation: n.generation,
            gossip_addr: n.gossip_addr,
            live: n.live,
            last_seen_ms: n.last_seen_ms,
            max_version: n.key_values.len() as u64,
            values: Some(
                n.key_values
                    .iter()
                    .enumerate()
                    .map(|(i, (key, value))| GossipedValue {
                        key: key.clone(),
                        value: value.clone(),
                        version: i as u64,
                    })
                    .collect(),
            ),
        })
        .collect();
    let admitted =
        verifier().lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(gossiped, 2_000);
    assert_eq!(admitted.len(), nodes.len(), "every node is admitted or refused, none lost");
}

/// One verifier of a cluster generated once (a CA and a key pair take milliseconds).
fn verifier() -> &'static std::sync::Mutex<Verifier> {
    static VERIFIER: std::sync::OnceLock<std::sync::Mutex<Verifier>> = std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| {
        let ca = cairn_transport::ClusterCa::generate().expect("a CA");
        let issued = ca.issue(&cairn_transport::Identity::Site(SiteId(1)), 1).expect("a certificate");
        let credentials =
            cairn_transport::Credentials::from_pem(ca.cert_pem(), &issued).expect("credentials");
        std::sync::Mutex::new(Verifier::new(credentials.trust().expect("trust")))
    })
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

/// The nodes of a cluster view drawn from arbitrary bytes for the planners' fuzz target
/// (`fuzz/fuzz_targets/planners.rs`, which checks every planner on the view they build):
/// each byte picks the next choice — how many sites and dbs, each db's settings, each
/// site's role, liveness, zone, capacity and draining flag, then replicas (db, shard,
/// phase, handover target) and plans — so any input is a view that decodes, in any
/// shape gossip could carry.
pub fn planner_nodes(data: &[u8]) -> Vec<NodeInput> {
    use cairn_gossip::summary::{
        DbSummary, Label, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSummary, StatusText, SummaryKey,
        encode_value,
    };
    use cairn_inventory::{DbName, DbSettings, Hlc, PlanId, Retention, Role};
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next().unwrap_or(0);
    let sites = usize::from(next() % 12) + 1;
    let dbs: Vec<(u32, u32)> = (0..usize::from(next() % 3) + 1)
        .map(|_| (u32::from(next() % 24) + 1, u32::from(next() % 16) + 1))
        .collect();
    let id = |i: usize| SiteId(((i as u128) + 1) << 96);
    let name = |d: usize| DbName::new(format!("db{d}")).expect("a valid name");
    let mut nodes = Vec::with_capacity(sites);
    for i in 0..sites {
        let flags = next();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + i as u16));
        let summary = SiteSummary {
            drain: None,
            role: if flags & 1 == 1 { Role::Replicant } else { Role::Core },
            addr: Label::truncated(&addr.to_string()),
            version: Label::truncated("fuzz"),
            started_ms: 0,
            zone: Some(Label::truncated(&format!("z{}", (flags >> 1) % 3))),
            capacity: u32::from(next()) + 1,
            leaving: false,
            draining: flags & 8 == 8,
            certificate_expires_ms: 0,
        };
        let mut kv = vec![(SummaryKey::Site.render(), encode_value(&summary))];
        for (d, (shards, replication)) in dbs.iter().enumerate() {
            if flags & 32 == 0 || d > 0 {
                let created = Hlc { wall_ms: 100 + u64::from(flags & 64 == 64) * i as u64, logical: 0 };
                let record = DbSummary {
                    settings: DbSettings::new(*shards, *replication, Retention::default()).expect("in range"),
                    created,
                    origin: id(0),
                    changed: created,
                    dropped: false,
                    supersedes: None,
                    seal: None,
                };
                kv.push((SummaryKey::Db(name(d)).render(), encode_value(&record)));
            }
        }
        let held = next() % 24;
        let mut keys = std::collections::BTreeSet::new();
        for _ in 0..held {
            let (d, shard, phase) = (usize::from(next()) % dbs.len(), u32::from(next() % 28), next());
            if !keys.insert((d, shard)) {
                continue;
            }
            let phase = match phase % 4 {
                0 => ReplicaPhase::CatchingUp,
                1 => ReplicaPhase::Ready,
                2 => ReplicaPhase::HandingOver { to: id(usize::from(phase >> 2) % 14) },
                _ => ReplicaPhase::Following { caught_up: phase & 4 == 4 },
            };
            let seq = u64::from(next());
            let replica = ReplicaSummary {
                phase,
                entries: seq,
                bytes: seq * 10,
                frontier_digest: 0,
                frontier: Frontier([(id(i), seq)].into()),
                progress: None,
            };
            kv.push((SummaryKey::Replica(name(d), shard).render(), encode_value(&replica)));
        }
        if flags & 16 == 16 {
            let plan = PlanSummary {
                plan_id: PlanId(1),
                priority: 10,
                step: 0,
                steps: 1,
                status: StatusText::truncated("running"),
            };
            kv.push((SummaryKey::Plan(name(usize::from(next()) % dbs.len())).render(), encode_value(&plan)));
        }
        nodes.push(NodeInput {
            site_id: id(i),
            generation: 1,
            gossip_addr: addr,
            live: flags & 4 == 0,
            last_seen_ms: Some(0),
            key_values: kv,
            forged: Vec::new(),
            unverified: None,
        });
    }
    nodes
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
