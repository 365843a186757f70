//! The records a site keeps about itself: dbs, replicas, plans and plan history.
//!
//! These are plain values. How they are stored lives in the store modules; how plans
//! change lives in [`crate::plan_machine`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, DbName, PlanId, SiteId};
use crate::settings::DbSettings;

/// A site's identity, written once when its data dir is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// This site's permanent id.
    pub site_id: SiteId,
    /// The cluster this data dir belongs to.
    pub cluster_id: ClusterId,
    /// When the data dir was created (ms since the Unix epoch).
    pub created_ms: u64,
}

/// What part a site plays: `Core` sites hold replicas; `Replicant` sites follow the
/// cluster view and are never given replicas by planners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds shard replicas and counts toward replication factors.
    #[default]
    Core,
    /// Keeps the cluster view; never chosen for a replica.
    Replicant,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::Replicant => "replicant",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "core" => Ok(Self::Core),
            "replicant" => Ok(Self::Replicant),
            other => Err(format!("unknown role {other:?}: use core or replicant")),
        }
    }
}

/// A db as this site knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRecord {
    /// The db's name.
    pub name: DbName,
    /// Shards, replication factor and retention.
    pub settings: DbSettings,
    /// When the db was created, on the creating site's hybrid logical clock. When two
    /// sites create the same name with different settings, the earliest creation wins
    /// (ties: the lower origin site id), the same way on every site.
    pub created: Hlc,
    /// The site where the db was created.
    pub origin: SiteId,
    /// When the settings were last changed (replication, retention, or the drop), on the
    /// changing site's clock; `created` until then. Among the records of one creation
    /// the latest change wins.
    pub changed: Hlc,
    /// A tombstone: the db was dropped at `changed`. Kept (without replicas) so the drop
    /// is gossiped and wins over records of the db that sites still hold.
    pub dropped: bool,
    /// For a db created again after a drop of the name: that drop's HLC. It keeps the
    /// drop in force when no site holds the tombstone any more (records of the name
    /// created at or before it stay dropped).
    pub supersedes: Option<Hlc>,
    /// The operator's signature of this record (creation, change or drop), without
    /// which no site takes it from gossip. `None` only on records that stay local (a
    /// tombstone a site wrote because a later creation superseded its db, or a record
    /// stored before format 4).
    pub seal: Option<OperatorSeal>,
}

impl DbRecord {
    /// A new db's record: created (and last changed) at `created` by `origin`.
    pub fn new(name: DbName, settings: DbSettings, created: Hlc, origin: SiteId) -> Self {
        Self {
            name,
            settings,
            created,
            origin,
            changed: created,
            dropped: false,
            supersedes: None,
            seal: None,
        }
    }

    /// The bytes an operator signs to seal this record: every field but the seal, after
    /// a domain tag, in the codec's encoding.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let fields = (
            "cairn db record v1",
            &self.name,
            &self.settings,
            self.created,
            self.origin,
            self.changed,
            self.dropped,
            self.supersedes,
        );
        // Encoding plain values into a Vec cannot fail; an empty message would check
        // against no signature.
        crate::codec::encode(&fields).unwrap_or_default()
    }

    /// Whether this is a creation (never changed since).
    pub fn is_creation(&self) -> bool {
        !self.dropped && self.changed == self.created
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        self.settings.shards.get()
    }

    /// The replication factor.
    pub fn replication(&self) -> u32 {
        self.settings.replication.get()
    }

    /// The same settings (shards, replication, retention), whoever created them when.
    pub fn same_settings(&self, other: &Self) -> bool {
        self.settings == other.settings
    }

    /// Which creation of the name this record belongs to: a db dropped and created again
    /// is a new one.
    pub fn incarnation(&self) -> (Hlc, SiteId) {
        (self.created, self.origin)
    }

    /// Orders two records of one creation: the later change first, then (for changes
    /// made at the same instant on two sites) a drop, then the higher settings, so every
    /// site picks the same one.
    pub fn version(&self) -> (Hlc, bool, u32, Option<u64>, Option<u64>) {
        let s = &self.settings;
        (self.changed, self.dropped, s.replication.get(), s.retention.max_age_ms, s.retention.max_bytes)
    }
}

/// An operator's signature of a [`DbRecord`]: the operator's certificate (DER) and its
/// signature of [`DbRecord::signed_bytes`]. Checking it (the certificate chains to the
/// cluster CA and names an operator; the signature checks) is the transport's job; this
/// is only the bytes, bounded on decode. In JSON it is one string,
/// `<certificate>.<signature>` in URL-safe base64.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OperatorSeal {
    /// The operator's certificate, DER.
    pub certificate: Vec<u8>,
    /// The signature (ECDSA P-256, fixed 64-byte form).
    pub signature: Vec<u8>,
}

/// Largest operator certificate a seal may carry (DER bytes).
pub const MAX_SEAL_CERTIFICATE: usize = 8 * 1024;
/// Largest signature a seal may carry.
pub const MAX_SEAL_SIGNATURE: usize = 256;

impl std::fmt::Debug for OperatorSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSeal")
            .field("certificate_bytes", &self.certificate.len())
            .field("signature_bytes", &self.signature.len())
            .finish()
    }
}

impl OperatorSeal {
    fn check(certificate: Vec<u8>, signature: Vec<u8>) -> Result<Self, String> {
        if certificate.len() > MAX_SEAL_CERTIFICATE {
            return Err(format!("a seal's certificate of {} bytes is too long", certificate.len()));
        }
        if signature.len() > MAX_SEAL_SIGNATURE {
            return Err(format!("a seal's signature of {} bytes is too long", signature.len()));
        }
        Ok(Self { certificate, signature })
    }

    /// The JSON form: `<certificate>.<signature>`, URL-safe base64 without padding.
    pub fn to_text(&self) -> String {
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&self.certificate), URL_SAFE_NO_PAD.encode(&self.signature))
    }

    /// Reads [`Self::to_text`]'s form.
    pub fn from_text(text: &str) -> Result<Self, String> {
        if text.len() > (MAX_SEAL_CERTIFICATE + MAX_SEAL_SIGNATURE) * 4 / 3 + 8 {
            return Err("the seal is too long".into());
        }
        let (certificate, signature) = text.split_once('.').ok_or("a seal is <certificate>.<signature>")?;
        let certificate =
            URL_SAFE_NO_PAD.decode(certificate).map_err(|_| "the seal's certificate is not base64")?;
        let signature =
            URL_SAFE_NO_PAD.decode(signature).map_err(|_| "the seal's signature is not base64")?;
        Self::check(certificate, signature)
    }
}

impl Serialize for OperatorSeal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_text())
        } else {
            (serde_bytes::Bytes::new(&self.certificate), serde_bytes::Bytes::new(&self.signature))
                .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for OperatorSeal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Self::from_text(&text).map_err(serde::de::Error::custom)
        } else {
            let (certificate, signature) =
                <(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>::deserialize(deserializer)?;
            Self::check(certificate.into_vec(), signature.into_vec()).map_err(serde::de::Error::custom)
        }
    }
}

/// An operator's order that a site drain (be emptied and take no new replicas) or stop
/// draining. The site keeps the latest and gossips it with its `draining` flag, so
/// peers believe the flag only when an operator ordered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOrder {
    /// The site ordered.
    pub site: SiteId,
    /// Draining or not.
    pub on: bool,
    /// When the operator made the order (ms since the Unix epoch).
    pub at_ms: u64,
    /// The operator's signature of [`Self::signed_bytes`].
    pub seal: Option<OperatorSeal>,
}

impl DrainOrder {
    /// The bytes an operator signs: everything but the seal, after a domain tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        crate::codec::encode(&("cairn drain order v1", self.site, self.on, self.at_ms)).unwrap_or_default()
    }
}

/// A hybrid logical clock reading: wall-clock milliseconds, then a counter that orders
/// events within one millisecond and keeps order when a clock runs behind the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the highest seen, not necessarily ours).
    pub wall_ms: u64,
    /// Orders readings with the same `wall_ms`.
    pub logical: u32,
}

impl Hlc {
    /// The next reading after `self` (the last reading or the highest seen), given the
    /// local wall clock `now_ms`: never earlier than anything already seen.
    pub fn tick(self, now_ms: u64) -> Self {
        if now_ms > self.wall_ms {
            Self { wall_ms: now_ms, logical: 0 }
        } else {
            Self { wall_ms: self.wall_ms, logical: self.logical.saturating_add(1) }
        }
    }
}

/// The state of a local replica: `CatchingUp` → `Ready` → `HandingOver` → gone on core
/// sites; `Following` on replicant sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Copying the shard's log from these upstream sites.
    CatchingUp {
        /// Sites the replica copies from.
        upstreams: Vec<SiteId>,
    },
    /// Holds the log and accepts writes.
    Ready,
    /// Refuses writes; is deleted once `to` holds a ready replica covering ours.
    HandingOver {
        /// The site taking over.
        to: SiteId,
    },
    /// A replicant's read-only copy, filled and kept current from a core replica; never
    /// part of the shard's placement, never takes writes.
    Following {
        /// Whether it has once held everything its upstream held when it started
        /// copying; until then it serves no reads.
        caught_up: bool,
    },
}

/// One local replica of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The db.
    pub db: DbName,
    /// The shard index.
    pub shard: u32,
    /// Where the replica is in its life.
    pub state: ReplicaState,
    /// When the replica was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When its state last changed.
    pub updated_ms: u64,
}

/// One primitive of a plan, run by the site that holds the plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Create a local replica, catch up from `upstreams`, become ready.
    AddReplica {
        /// The shard.
        shard: u32,
        /// Sites holding the shard to copy from.
        upstreams: Vec<SiteId>,
    },
    /// Stop taking writes, then delete the local replica once `to` covers it.
    HandoverReplica {
        /// The shard.
        shard: u32,
        /// The site taking over.
        to: SiteId,
    },
    /// Delete the local replica unconditionally.
    RemoveReplica {
        /// The shard.
        shard: u32,
    },
}

/// Who made a plan, and why. Priority decides between plans; this is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlanOrigin {
    /// Made by automation on the given site (the planner of record).
    Automatic {
        /// The planning site.
        planner: SiteId,
    },
    /// Asked for by an operator through the given site.
    Operator {
        /// The site the operator's request reached.
        via: SiteId,
    },
}

/// A plan for one site and one db, as offered to that site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The db the plan changes.
    pub db: DbName,
    /// The plan's identity.
    pub plan_id: PlanId,
    /// Higher replaces lower; equal or lower offers are ignored.
    pub priority: u32,
    /// Who made it.
    pub origin: PlanOrigin,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The plan a site is executing for a db, as stored in its inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPlan {
    /// The db.
    pub db: DbName,
    /// The plan's identity.
    pub plan_id: PlanId,
    /// Its priority.
    pub priority: u32,
    /// Who made it.
    pub origin: PlanOrigin,
    /// Steps already done (the index of the head of `remaining` in the original plan).
    pub done: u32,
    /// Steps still to run, head first. Never empty: a plan with no steps left is finished.
    pub remaining: Vec<Step>,
    /// When this site accepted the plan (ms since the Unix epoch).
    pub received_ms: u64,
}

impl PendingPlan {
    /// The step to run now.
    pub fn head(&self) -> Option<&Step> {
        self.remaining.first()
    }

    /// Total number of steps of the original plan.
    pub fn total(&self) -> u32 {
        self.done + self.remaining.len() as u32
    }
}

/// How a plan left the pending slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanEnd {
    /// Every step ran.
    Completed,
    /// A higher-priority plan took its place.
    Replaced {
        /// The plan that replaced it.
        by: PlanId,
    },
    /// Cancelled by an operator (or by dropping the db).
    Cancelled,
    /// Gave up on a step.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One finished plan in a db's bounded history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHistoryEntry {
    /// The db.
    pub db: DbName,
    /// The plan.
    pub plan_id: PlanId,
    /// Its priority.
    pub priority: u32,
    /// Who made it.
    pub origin: PlanOrigin,
    /// Steps done when it ended.
    pub done: u32,
    /// Steps it had in all.
    pub total: u32,
    /// How it ended.
    pub end: PlanEnd,
    /// When it ended (ms since the Unix epoch).
    pub ended_ms: u64,
}

impl PlanEnd {
    /// A one-word name for tables and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Replaced { .. } => "replaced",
            Self::Cancelled => "cancelled",
            Self::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_never_goes_back_even_when_the_clock_does() {
        let start = Hlc::default().tick(1_000);
        assert_eq!(start, Hlc { wall_ms: 1_000, logical: 0 });
        // The wall clock jumps back: the reading still moves forward.
        let behind = start.tick(400);
        assert!(behind > start);
        assert_eq!(behind, Hlc { wall_ms: 1_000, logical: 1 });
        // A reading seen from a site whose clock runs ahead is followed, then passed.
        let seen = Hlc { wall_ms: 61_000, logical: 3 };
        let after = behind.max(seen).tick(1_200);
        assert!(after > seen && after > behind);
        // The clock catching up resets the counter.
        assert_eq!(after.tick(70_000), Hlc { wall_ms: 70_000, logical: 0 });
    }
}
