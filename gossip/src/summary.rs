//! What a site publishes about itself: its inventory summarised as chitchat key/values.
//!
//! Keys (owned by the publishing site, in its own chitchat node state):
//!
//! | key | value |
//! |---|---|
//! | `site` | [`SiteSummary`]: role, address, version, start time, zone, capacity, leaving, draining |
//! | `db:<name>` | [`DbSummary`]: the db's settings as this site holds them |
//! | `r:<db>:<shard>` | [`ReplicaSummary`]: state, entries, bytes, frontier digest, progress |
//! | `plan:<db>` | [`PlanSummary`]: the pending plan's id, priority, step k of n, status |
//! | `load` | [`LoadSummary`]: replicas and bytes held |
//!
//! Values are the codec's plain envelope (so versioned by its first byte) in URL-safe
//! base64, since chitchat values are strings. Everything here is pure: a snapshot in,
//! keys out, and the difference between two key sets (what to set, what to delete).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_inventory::{
    DbName, DbRecord, DbSettings, DrainOrder, Frontier, Hlc, OperatorSeal, PlanId, RevocationList, Role,
    SiteId, codec,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The site's own key.
pub const SITE_KEY: &str = "site";
/// The site's load key.
pub const LOAD_KEY: &str = "load";
/// The revocation list's key.
pub const REVOCATIONS_KEY: &str = "revoked";
const DB_PREFIX: &str = "db:";
const REPLICA_PREFIX: &str = "r:";
const PLAN_PREFIX: &str = "plan:";

/// Text from a peer, at most `MAX` bytes: decoding refuses anything longer.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BoundedText<const MAX: usize>(String);

impl<const MAX: usize> BoundedText<MAX> {
    /// `text`, if it is at most `MAX` bytes.
    pub fn new(text: impl Into<String>) -> Result<Self, String> {
        let text = text.into();
        if text.len() > MAX {
            return Err(format!("{} bytes of text where at most {MAX} are allowed", text.len()));
        }
        Ok(Self(text))
    }

    /// `text` cut to at most `MAX` bytes (at a character boundary).
    pub fn truncated(text: &str) -> Self {
        let mut end = text.len().min(MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self(text[..end].to_owned())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedText<MAX> {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<const MAX: usize> From<BoundedText<MAX>> for String {
    fn from(value: BoundedText<MAX>) -> Self {
        value.0
    }
}

impl<const MAX: usize> std::fmt::Display for BoundedText<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A short label from a peer: an address, a version, a zone (at most 128 bytes).
pub type Label = BoundedText<128>;
/// A plan's status line (at most 1 KiB).
pub type StatusText = BoundedText<1024>;

/// The site itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSummary {
    /// Core or replicant.
    pub role: Role,
    /// The address peers and the CLI reach it at.
    pub addr: Label,
    /// cairn's version.
    pub version: Label,
    /// When this process started (ms since the Unix epoch).
    pub started_ms: u64,
    /// A failure-domain label (rack, zone), if set.
    pub zone: Option<Label>,
    /// Relative capacity for placement (100 = the usual).
    pub capacity: u32,
    /// Set just before a clean shutdown, so peers show it as `left`, not `dead`.
    pub leaving: bool,
    /// Being decommissioned: planners place nothing here and move its replicas away.
    pub draining: bool,
    /// When the certificate it serves with stops being valid (ms since the Unix epoch;
    /// 0 if it did not say).
    pub certificate_expires_ms: u64,
    /// The operator's order behind `draining` (peers believe the flag only with it).
    pub drain: Option<DrainOrder>,
}

/// A db as this site holds it: its record without the name (the key carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSummary {
    /// Shards, replication factor, retention (decoded only when in range).
    pub settings: DbSettings,
    /// When it was created (HLC), which decides between conflicting creations.
    pub created: Hlc,
    /// Where it was created.
    pub origin: SiteId,
    /// When the settings last changed (or the db was dropped).
    pub changed: Hlc,
    /// A tombstone: the db was dropped at `changed`.
    pub dropped: bool,
    /// The drop of an earlier db of this name that this one was created after.
    pub supersedes: Option<Hlc>,
    /// The operator's signature of the record (sites take no record without one).
    pub seal: Option<OperatorSeal>,
}

impl From<&DbRecord> for DbSummary {
    fn from(db: &DbRecord) -> Self {
        Self {
            settings: db.settings,
            created: db.created,
            origin: db.origin,
            changed: db.changed,
            dropped: db.dropped,
            supersedes: db.supersedes,
            seal: db.seal.clone(),
        }
    }
}

impl DbSummary {
    /// The record this summary describes, for db `name`.
    pub fn record(&self, name: DbName) -> DbRecord {
        DbRecord {
            name,
            settings: self.settings,
            created: self.created,
            origin: self.origin,
            changed: self.changed,
            dropped: self.dropped,
            supersedes: self.supersedes,
            seal: self.seal.clone(),
        }
    }

    /// The latest wall-clock time any of its HLCs claims (to refuse clocks far ahead).
    pub fn latest_wall_ms(&self) -> u64 {
        let times = [Some(self.created), Some(self.changed), self.supersedes];
        times.into_iter().flatten().map(|h| h.wall_ms).max().unwrap_or(0)
    }
}

/// The state of a replica, as gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaPhase {
    /// Copying from upstreams.
    CatchingUp,
    /// Serving.
    Ready,
    /// Leaving for `to`.
    HandingOver {
        /// The site taking over.
        to: SiteId,
    },
    /// A replicant's read-only copy (not part of the placement).
    Following {
        /// Whether it has caught up once (it serves reads).
        caught_up: bool,
    },
}

/// One replica this site holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    /// Its state.
    pub phase: ReplicaPhase,
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// A digest of the frontier, so peers can tell equal frontiers apart cheaply.
    pub frontier_digest: u64,
    /// Per origin site, the seq up to which everything is held (bounded on decode).
    pub frontier: Frontier,
    /// While catching up: how far along it is.
    pub progress: Option<CatchUpProgress>,
}

/// How far a catching-up replica is, as published while it copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchUpProgress {
    /// Entries received from upstreams so far (duplicates included).
    pub received_entries: u64,
    /// Payload bytes received so far.
    pub received_bytes: u64,
    /// Entries the largest upstream held when the catch-up (re)started.
    pub target_entries: u64,
    /// Payload bytes the largest upstream held then.
    pub target_bytes: u64,
    /// Payload bytes per second over the last seconds.
    pub rate_bytes_per_s: u64,
    /// Seconds left at that rate, when it can be told.
    pub eta_s: Option<u64>,
}

/// The plan this site is running for a db.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The plan.
    pub plan_id: PlanId,
    /// Its priority.
    pub priority: u32,
    /// Steps done.
    pub step: u32,
    /// Steps in all.
    pub steps: u32,
    /// `running`, or the last error of the head step.
    pub status: StatusText,
}

/// How much this site holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Replicas held.
    pub replicas: u64,
    /// Payload bytes held.
    pub bytes: u64,
}

/// Everything a site publishes, as plain values (read from its inventory by the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSnapshot {
    /// The site itself.
    pub site: SiteSummary,
    /// Its dbs.
    pub dbs: Vec<DbRecord>,
    /// Its replicas by (db, shard).
    pub replicas: Vec<(DbName, u32, ReplicaSummary)>,
    /// Its pending plans by db.
    pub plans: Vec<(DbName, PlanSummary)>,
    /// The newest revocation list it holds (an operator's; gossiped whole).
    pub revocations: Option<RevocationList>,
}

/// A typed key of a site's summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SummaryKey {
    /// `site`.
    Site,
    /// `load`.
    Load,
    /// `db:<name>`.
    Db(DbName),
    /// `r:<db>:<shard>`.
    Replica(DbName, u32),
    /// `plan:<db>`.
    Plan(DbName),
    /// `revoked`: the cluster's revocation list as this site holds it.
    Revocations,
}

impl SummaryKey {
    /// The chitchat key.
    pub fn render(&self) -> String {
        match self {
            Self::Site => SITE_KEY.to_owned(),
            Self::Load => LOAD_KEY.to_owned(),
            Self::Db(db) => format!("{DB_PREFIX}{db}"),
            Self::Replica(db, shard) => format!("{REPLICA_PREFIX}{db}:{shard}"),
            Self::Plan(db) => format!("{PLAN_PREFIX}{db}"),
            Self::Revocations => REVOCATIONS_KEY.to_owned(),
        }
    }

    /// Parses a chitchat key; `None` for keys that are not ours.
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            SITE_KEY => return Some(Self::Site),
            LOAD_KEY => return Some(Self::Load),
            REVOCATIONS_KEY => return Some(Self::Revocations),
            _ => {}
        }
        if let Some(name) = key.strip_prefix(DB_PREFIX) {
            return DbName::new(name).ok().map(Self::Db);
        }
        if let Some(name) = key.strip_prefix(PLAN_PREFIX) {
            return DbName::new(name).ok().map(Self::Plan);
        }
        let rest = key.strip_prefix(REPLICA_PREFIX)?;
        let (db, shard) = rest.rsplit_once(':')?;
        Some(Self::Replica(DbName::new(db).ok()?, shard.parse().ok()?))
    }
}

/// Encodes a value for chitchat.
pub fn encode_value<T: Serialize>(value: &T) -> String {
    // Our summary types always encode; an error here would be a bug in a derive.
    let bytes = codec::encode(value).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a value published by a peer.
pub fn decode_value<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|e| format!("not base64: {e}"))?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}

/// A frontier's digest: FNV-1a over its (origin, seq) pairs in order.
pub fn frontier_digest(frontier: &Frontier) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (origin, seq) in frontier.iter() {
        for byte in origin.0.to_be_bytes().into_iter().chain(seq.to_be_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The key/values a site publishes for a snapshot.
pub fn summarize(snapshot: &SiteSnapshot) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    keys.insert(SummaryKey::Site.render(), encode_value(&snapshot.site));
    // A record no operator sealed stays local: no site would take it.
    for db in snapshot.dbs.iter().filter(|db| db.seal.is_some()) {
        keys.insert(SummaryKey::Db(db.name.clone()).render(), encode_value(&DbSummary::from(db)));
    }
    let mut load = LoadSummary::default();
    for (db, shard, replica) in &snapshot.replicas {
        load.replicas += 1;
        load.bytes = load.bytes.saturating_add(replica.bytes);
        keys.insert(SummaryKey::Replica(db.clone(), *shard).render(), encode_value(replica));
    }
    for (db, plan) in &snapshot.plans {
        keys.insert(SummaryKey::Plan(db.clone()).render(), encode_value(plan));
    }
    keys.insert(SummaryKey::Load.render(), encode_value(&load));
    if let Some(list) = snapshot.revocations.as_ref().filter(|l| l.seal.is_some()) {
        keys.insert(SummaryKey::Revocations.render(), encode_value(list));
    }
    keys
}

/// One change to apply to chitchat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set key to value.
    Set(String, String),
    /// Delete key (chitchat keeps a tombstone so peers learn of it).
    Delete(String),
}

/// What to set and delete to go from `published` to `wanted`: only what changed.
pub fn diff(published: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, value) in wanted {
        if published.get(key) != Some(value) {
            changes.push(Change::Set(key.clone(), value.clone()));
        }
    }
    for key in published.keys() {
        if !wanted.contains_key(key) {
            changes.push(Change::Delete(key.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn db(name: &str) -> DbName {
        DbName::new(name).unwrap()
    }

    #[test]
    fn keys_render_and_parse_back() {
        for key in [
            SummaryKey::Site,
            SummaryKey::Load,
            SummaryKey::Db(db("orders.v2")),
            SummaryKey::Replica(db("a-b_c"), 4095),
            SummaryKey::Plan(db("x")),
        ] {
            assert_eq!(SummaryKey::parse(&key.render()), Some(key));
        }
        for bad in ["", "r:", "r:db", "r:db:x", "r:bad name:1", "db:", "other", "plan:-x"] {
            assert_eq!(SummaryKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn undecodable_values_are_errors_not_panics() {
        assert!(decode_value::<SiteSummary>("!!!").is_err());
        assert!(decode_value::<SiteSummary>("AQ").is_err());
        assert!(decode_value::<SiteSummary>(&encode_value(&7u8)).is_err());
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_wanted_keys(
            old in prop::collection::btree_map("[a-e]{1,2}", "[x-z]{0,2}", 0..10),
            new in prop::collection::btree_map("[a-e]{1,2}", "[x-z]{0,2}", 0..10),
        ) {
            let mut state = old.clone();
            let changes = diff(&old, &new);
            for change in &changes {
                match change {
                    Change::Set(k, v) => { state.insert(k.clone(), v.clone()); }
                    Change::Delete(k) => { state.remove(k); }
                }
            }
            prop_assert_eq!(&state, &new);
            // Only what changed: no set of an unchanged value, no delete of a kept key.
            let unchanged = old.iter().filter(|(k, v)| new.get(*k) == Some(*v)).count();
            prop_assert_eq!(changes.len(), new.len() - unchanged + old.keys().filter(|k| !new.contains_key(*k)).count());
        }

        #[test]
        fn summaries_decode_to_what_was_encoded(entries in any::<u64>(), bytes in any::<u64>(), to in any::<u128>()) {
            let summary = ReplicaSummary {
                phase: ReplicaPhase::HandingOver { to: SiteId(to) },
                entries, bytes, frontier_digest: 9, frontier: Frontier([(SiteId(1), entries.min(cairn_inventory::MAX_SEQ))].into()),
                progress: Some(CatchUpProgress { received_bytes: bytes, eta_s: Some(3), ..CatchUpProgress::default() }),
            };
            prop_assert_eq!(decode_value::<ReplicaSummary>(&encode_value(&summary)).unwrap(), summary);
        }
    }
}
