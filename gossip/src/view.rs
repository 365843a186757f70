//! The cluster view: what every site publishes, merged into one typed picture.
//!
//! [`build_view`] is a pure function of plain inputs (one [`NodeInput`] per chitchat
//! node, the time and the [`ViewLimits`]), so it is tested without a network. Its output
//! serialises to the JSON that `cairn dump --format json` prints (the schema is
//! documented in the README).
//!
//! Rules:
//! - only what is signed by the site it is about is taken in ([`crate::signed`] checks
//!   it before the view is built): a node that is not verified is left out and a value
//!   that is forged is ignored, each listed as a `forged` warning;
//! - one entry per site id: the verified node with the highest generation (the newest
//!   process);
//! - a site is `live` if chitchat's failure detector says so, else `left` if its last
//!   summary said it was leaving, else `dead`;
//! - nothing a peer says is believed unchecked: a value that does not decode into its
//!   type (a shard count or replication factor out of range, a frontier too long or
//!   beyond the highest seq, text too long), an address that does not parse, or a db
//!   record whose clock reading is further ahead of ours than `max_clock_drift` is
//!   ignored and listed as an `invalid` warning naming the site, the key and why;
//!   sites, keys per site and dbs beyond their caps are ignored the same way, and a
//!   node without a readable `site` summary is left out of the view altogether;
//! - a db's settings are resolved by [`crate::settings::resolve`]: drops end earlier
//!   creations, then the earliest creation by HLC (ties: the lower origin site id), then
//!   its latest change — the same on every site whatever the clocks say; sites holding
//!   another creation's different settings are listed as a `conflicting_db` warning;
//!   dropped names are listed in `dropped`;
//! - a replicant's copies (phase `following`) are listed apart from the placement, as a
//!   shard's `followers` with how many entries they lack, so nothing that counts
//!   replicas (planners, warnings, handovers) ever sees them.
//!
//! The view is built in named stages: [`newest_sites`], [`decode_site`],
//! [`site_views`], [`db_views`] (settings, placement, followers, shard warnings) and
//! [`plan_views`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use cairn_inventory::{
    DbName, DbRecord, DbSettings, Frontier, Hlc, OperatorSeal, PlanId, RevocationList, Role, SiteId,
};
use serde::{Deserialize, Serialize};

use crate::decoded::{DecodeCache, Value};
use crate::summary::{
    CatchUpProgress, DbSummary, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSummary, SummaryKey,
};

/// One chitchat node's state, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    /// The site id its certificate names; for a node whose certificate is not believed,
    /// what its gossip name says of one ([`crate::GossipName::partial_site_id`]).
    pub site_id: SiteId,
    /// The process generation.
    pub generation: u64,
    /// The address chitchat gossips with.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector considers it live.
    pub live: bool,
    /// When this node last saw its heartbeat advance (ms since the Unix epoch).
    pub last_seen_ms: Option<u64>,
    /// Its key/values (tombstones excluded): payloads whose signature checked.
    pub key_values: Vec<(String, String)>,
    /// Keys whose values were left out because their signature did not check, and why.
    pub forged: Vec<(String, String)>,
    /// Why the node as a whole is not believed (its certificate does not check or names
    /// another site or role): it is left out of the view.
    pub unverified: Option<String>,
}

/// How much of what peers publish a view takes in; the rest is ignored with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewLimits {
    /// Sites in the view (this site always among them).
    pub max_sites: usize,
    /// Keys read from one site.
    pub max_keys_per_site: usize,
    /// Db names in the view (dropped ones included).
    pub max_dbs: usize,
    /// A db record whose clock readings are further ahead of this site's clock is not
    /// believed (milliseconds).
    pub max_clock_drift_ms: u64,
}

impl Default for ViewLimits {
    fn default() -> Self {
        Self { max_sites: 4096, max_keys_per_site: 200_000, max_dbs: 1024, max_clock_drift_ms: 60_000 }
    }
}

/// What a view is built against besides the nodes: the time and the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewContext {
    /// This site's clock (ms since the Unix epoch).
    pub now_ms: u64,
    /// The caps.
    pub limits: ViewLimits,
}

impl ViewContext {
    /// The default limits at `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        Self { now_ms, limits: ViewLimits::default() }
    }
}

/// Whether a site is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteState {
    /// The failure detector hears it.
    Live,
    /// It went silent without saying goodbye.
    Dead,
    /// It said it was leaving, then went silent.
    Left,
}

/// One site as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteView {
    /// Its id.
    pub site_id: SiteId,
    /// Where to reach it.
    pub addr: String,
    /// Core or replicant.
    pub role: Role,
    /// Live, dead or left.
    pub state: SiteState,
    /// Its process generation.
    pub generation: u64,
    /// Its cairn version.
    pub version: String,
    /// Its failure-domain label.
    pub zone: Option<String>,
    /// Its placement weight.
    pub capacity: u32,
    /// Being decommissioned: nothing is placed here, its replicas move away.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// When it started.
    pub started_ms: u64,
    /// When its heartbeat last advanced, as seen here; `None` while it is live.
    pub last_seen_ms: Option<u64>,
    /// Replicas it holds (placement replicas only; not a replicant's copies).
    pub replicas: u64,
    /// Payload bytes it holds (copies included).
    pub bytes: u64,
    /// A replicant's read-only copies of shards it follows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub following: u64,
    /// When the certificate it serves with stops being valid (ms since the Unix epoch),
    /// if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_ms: Option<u64>,
}

/// A live site whose certificate ends within this long is a warning.
pub const CERTIFICATE_WARNING_MS: u64 = 30 * 86_400_000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a replica of the placement is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementState {
    /// Copying the shard from upstreams; serves nothing yet.
    CatchingUp,
    /// Complete: takes writes and serves reads.
    Ready,
    /// Complete, leaving for the site in the replica's `to`: serves reads.
    HandingOver,
}

impl std::fmt::Display for PlacementState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CatchingUp => "catching_up",
            Self::Ready => "ready",
            Self::HandingOver => "handing_over",
        })
    }
}

/// One replica in a db's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaView {
    /// The holding site.
    pub site_id: SiteId,
    /// `catching_up`, `ready` or `handing_over`.
    pub state: PlacementState,
    /// For `handing_over`: the site taking over.
    pub to: Option<SiteId>,
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// Per origin site, the seq up to which everything is held.
    pub frontier: Frontier,
    /// While catching up: how far along it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CatchUpProgress>,
}

impl ReplicaView {
    /// Ready: takes writes.
    pub fn is_ready(&self) -> bool {
        self.state == PlacementState::Ready
    }

    /// A complete copy of the shard (ready or handing over): serves reads and pulls.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, PlacementState::Ready | PlacementState::HandingOver)
    }

    /// Handing over to another site.
    pub fn is_handing_over(&self) -> bool {
        self.state == PlacementState::HandingOver
    }
}

/// One shard's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardView {
    /// The shard index.
    pub shard: u32,
    /// Its replicas, by site id.
    pub replicas: Vec<ReplicaView>,
    /// Replicant sites' read-only copies, by site id: never counted as replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerView>,
}

/// The state of a replicant's copy, as the view shows it (one state: such a copy is never
/// part of the placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowerState {
    /// A read-only copy kept up to date from the shard's ready replicas.
    Following,
}

/// A replicant's copy of a shard (state `following`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowerView {
    /// The replicant site.
    pub site_id: SiteId,
    /// `following`.
    pub state: FollowerState,
    /// Whether it has caught up once; until then it serves no reads.
    pub caught_up: bool,
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// Per origin site, the seq up to which everything is held.
    pub frontier: Frontier,
    /// Entries the most complete ready replica on a live site holds beyond this copy's
    /// frontier (per origin, summed); `None` when no such replica is in the view.
    pub lag_entries: Option<u64>,
    /// While catching up: how far along it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CatchUpProgress>,
}

/// One db.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbView {
    /// Its name.
    pub name: DbName,
    /// Shards, replication factor and retention.
    pub settings: DbSettings,
    /// Creation time (HLC).
    pub created: Hlc,
    /// The creating site.
    pub origin: SiteId,
    /// When the settings last changed (HLC; `created` if never).
    pub changed: Hlc,
    /// The latest drop of the name this db was created after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<Hlc>,
    /// The operator's signature of the record these settings come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<OperatorSeal>,
    /// Every shard, in order, with its replicas.
    pub placement: Vec<ShardView>,
}

impl DbView {
    /// The db's settings as an inventory record (what a site stores when it first
    /// takes a replica of a db it learned of through gossip).
    pub fn record(&self) -> DbRecord {
        DbRecord {
            name: self.name.clone(),
            settings: self.settings,
            created: self.created,
            origin: self.origin,
            changed: self.changed,
            dropped: false,
            supersedes: self.supersedes,
            seal: self.seal.clone(),
        }
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        self.settings.shards.get()
    }

    /// The replication factor.
    pub fn replication(&self) -> u32 {
        self.settings.replication.get()
    }

    /// One shard's replicas, if the db has that shard.
    pub fn shard(&self, shard: u32) -> Option<&ShardView> {
        self.placement.get(usize::try_from(shard).ok()?)
    }
}

/// A db name that was dropped: every record of it created at or before `at` is gone
/// (a db of that name in `dbs` is a later creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DroppedDb {
    /// The name.
    pub name: DbName,
    /// When the latest drop happened (HLC).
    pub at: Hlc,
    /// The operator-sealed tombstone of that drop, when the drop was one (not a later
    /// creation's `supersedes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<DbRecord>,
}

/// A plan some site is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanView {
    /// The db.
    pub db: DbName,
    /// The site running it.
    pub site_id: SiteId,
    /// The plan.
    pub plan_id: PlanId,
    /// Its priority.
    pub priority: u32,
    /// Steps done.
    pub step: u32,
    /// Steps in all.
    pub steps: u32,
    /// `running` or the head step's last error.
    pub status: String,
}

/// Something an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Warning {
    /// Shards with fewer ready replicas on live sites than the replication factor.
    UnderReplicated {
        /// The db.
        db: DbName,
        /// The shards.
        shards: Vec<u32>,
        /// What it means.
        message: String,
    },
    /// Placed shards with no ready (or handing-over) replica on any live site: nothing
    /// is left to recover them from.
    LostShards {
        /// The db.
        db: DbName,
        /// The shards.
        shards: Vec<u32>,
        /// What it means.
        message: String,
    },
    /// A site holds settings for a db that lost to another creation.
    ConflictingDb {
        /// The db.
        db: DbName,
        /// The site holding the losing settings.
        site_id: SiteId,
        /// What it means.
        message: String,
    },
    /// A dead site still holds replicas.
    DeadSiteHoldsReplicas {
        /// The site.
        site_id: SiteId,
        /// How many.
        replicas: u64,
        /// What it means.
        message: String,
    },
    /// A site published a value that is not believed: it does not decode into its type
    /// (out of range, too long, malformed), its clock is too far ahead, or it is beyond
    /// a cap. The value is ignored.
    Invalid {
        /// The site.
        site_id: SiteId,
        /// The key (or `*` for what concerns the whole site).
        key: String,
        /// What was wrong, in words.
        message: String,
    },
    /// What a node gossips is not signed by the site it names: a node whose
    /// certificate does not check (or names another site or role) is left out of the
    /// view (`key` is `*`), and a value whose signature does not check is ignored.
    Forged {
        /// The site the node or value claims to be.
        site_id: SiteId,
        /// The key (or `*` for the whole node).
        key: String,
        /// What was wrong, in words.
        message: String,
    },
    /// A live site's certificate expires within [`CERTIFICATE_WARNING_MS`] (or has):
    /// renew it with `cairn cluster issue-cert` and reload it.
    CertificateExpiring {
        /// The site.
        site_id: SiteId,
        /// When it stops being valid (ms since the Unix epoch).
        expires_ms: u64,
        /// What it means.
        message: String,
    },
}

/// The whole cluster as one site sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterView {
    /// The site whose view this is.
    pub site: SiteId,
    /// Every site, by id.
    pub sites: Vec<SiteView>,
    /// Every db, by name.
    pub dbs: Vec<DbView>,
    /// Dropped db names, by name (tombstones sites still gossip).
    #[serde(default)]
    pub dropped: Vec<DroppedDb>,
    /// Plans in progress, by db then site.
    pub plans: Vec<PlanView>,
    /// What needs attention.
    pub warnings: Vec<Warning>,
    /// The newest operator-sealed revocation list any verified site gossips: the
    /// certificates and identities every site refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocations: Option<RevocationList>,
}

impl ClusterView {
    /// A site by id.
    pub fn site(&self, id: SiteId) -> Option<&SiteView> {
        self.sites.iter().find(|s| s.site_id == id)
    }

    /// A db by name.
    pub fn db(&self, name: &DbName) -> Option<&DbView> {
        self.dbs.iter().find(|d| &d.name == name)
    }

    /// Whether `site` is live.
    pub fn is_live(&self, site: SiteId) -> bool {
        self.site(site).is_some_and(|s| s.state == SiteState::Live)
    }

    /// The replicas of `db`/`shard`, empty when the view has no such shard.
    pub fn replicas(&self, db: &DbName, shard: u32) -> &[ReplicaView] {
        self.db(db).and_then(|d| d.shard(shard)).map_or(&[], |s| &s.replicas[..])
    }

    /// Whether the view is whole: every db's placement lists each of its shards once,
    /// in order, and every replica's site is in `sites`. [`build_view`] always makes
    /// whole views; a view read from a file is checked with this before it is used.
    pub fn check(&self) -> Result<(), String> {
        let sites: BTreeSet<SiteId> = self.sites.iter().map(|s| s.site_id).collect();
        if sites.len() != self.sites.len() {
            return Err("a site is listed twice".into());
        }
        for db in &self.dbs {
            if db.placement.len() != db.shards() as usize {
                return Err(format!(
                    "db {}: placement lists {} shards, its settings say {}",
                    db.name,
                    db.placement.len(),
                    db.shards()
                ));
            }
            for (i, shard) in db.placement.iter().enumerate() {
                if shard.shard as usize != i {
                    return Err(format!("db {}: placement entry {i} is shard {}", db.name, shard.shard));
                }
                let mut holders = BTreeSet::new();
                for r in
                    shard.replicas.iter().map(|r| r.site_id).chain(shard.followers.iter().map(|f| f.site_id))
                {
                    if !sites.contains(&r) {
                        return Err(format!("db {} shard {i}: replica on unknown site {r}", db.name));
                    }
                    if !holders.insert(r) {
                        return Err(format!("db {} shard {i}: site {r} holds two replicas", db.name));
                    }
                }
            }
        }
        let names: BTreeSet<&DbName> = self.dbs.iter().map(|d| &d.name).collect();
        if names.len() != self.dbs.len() {
            return Err("a db is listed twice".into());
        }
        Ok(())
    }
}

/// Most `invalid` warnings listed for one site; the rest are counted in one more.
const MAX_INVALID_PER_SITE: usize = 16;

/// What one site published, decoded and checked.
#[derive(Default)]
struct Decoded {
    site: Option<SiteSummary>,
    dbs: Vec<(DbName, DbSummary)>,
    replicas: Vec<(DbName, u32, ReplicaSummary)>,
    plans: Vec<(DbName, PlanSummary)>,
    revocations: Option<RevocationList>,
}

/// Collects one site's `invalid` warnings, listing at most [`MAX_INVALID_PER_SITE`].
struct Invalids<'w> {
    site: SiteId,
    listed: usize,
    more: usize,
    warnings: &'w mut Vec<Warning>,
}

impl Invalids<'_> {
    fn add(&mut self, key: &str, why: impl std::fmt::Display) {
        if self.listed == MAX_INVALID_PER_SITE {
            self.more += 1;
            return;
        }
        self.listed += 1;
        self.warnings.push(Warning::Invalid {
            site_id: self.site,
            key: key.chars().take(128).collect(),
            message: format!("site {} published {key} that is not believed: {why}", self.site.short()),
        });
    }

    fn finish(self) {
        if self.more > 0 {
            self.warnings.push(Warning::Invalid {
                site_id: self.site,
                key: "*".into(),
                message: format!(
                    "site {} published {} more values that are not believed",
                    self.site.short(),
                    self.more
                ),
            });
        }
    }
}

/// Stage 1: the newest generation of each site, at most `max_sites` of them (this site
/// first, then live ones, then by id).
pub fn newest_sites<'n>(
    self_site: SiteId,
    nodes: &'n [NodeInput],
    limits: &ViewLimits,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<SiteId, &'n NodeInput> {
    // Ties (which chitchat does not produce) are broken so the result never depends on
    // input order.
    let rank = |n: &NodeInput| (n.generation, n.live, n.gossip_addr);
    let mut newest: BTreeMap<SiteId, &NodeInput> = BTreeMap::new();
    for node in nodes {
        if let Some(why) = &node.unverified {
            warnings.push(Warning::Forged {
                site_id: node.site_id,
                key: "*".into(),
                message: format!(
                    "a node gossiping as {} (generation {}) is not believed: {why}",
                    crate::GossipName::of(node.site_id),
                    node.generation
                ),
            });
            continue;
        }
        let slot = newest.entry(node.site_id).or_insert(node);
        if rank(node) > rank(slot) {
            *slot = node;
        }
    }
    if newest.len() > limits.max_sites.max(1) {
        let mut order: Vec<(bool, bool, SiteId)> =
            newest.values().map(|n| (n.site_id != self_site, !n.live, n.site_id)).collect();
        order.sort();
        let dropped: Vec<SiteId> = order[limits.max_sites.max(1)..].iter().map(|(_, _, id)| *id).collect();
        for id in &dropped {
            newest.remove(id);
        }
        warnings.push(Warning::Invalid {
            site_id: self_site,
            key: "*".into(),
            message: format!(
                "gossip names {} sites, over the cap of {}; {} are left out of the view",
                order.len(),
                limits.max_sites,
                dropped.len()
            ),
        });
    }
    newest
}

/// Stage 2: one site's key/values, decoded into their types; what does not decode or
/// is not believed becomes an `invalid` warning.
fn decode_site(
    node: &NodeInput,
    ctx: &ViewContext,
    cache: &mut DecodeCache,
    warnings: &mut Vec<Warning>,
) -> Decoded {
    let mut out = Decoded::default();
    for (key, why) in node.forged.iter().take(MAX_INVALID_PER_SITE) {
        warnings.push(Warning::Forged {
            site_id: node.site_id,
            key: key.chars().take(128).collect(),
            message: format!("a value of {key} gossiped for site {} is ignored: {why}", node.site_id.short()),
        });
    }
    if node.forged.len() > MAX_INVALID_PER_SITE {
        warnings.push(Warning::Forged {
            site_id: node.site_id,
            key: "*".into(),
            message: format!(
                "{} more values gossiped for site {} are ignored: their signatures do not check",
                node.forged.len() - MAX_INVALID_PER_SITE,
                node.site_id.short()
            ),
        });
    }
    let mut bad = Invalids { site: node.site_id, listed: 0, more: 0, warnings };
    let ours = node.key_values.iter().filter_map(|(k, v)| Some((SummaryKey::parse(k)?, k, v)));
    let mut read = 0usize;
    // chitchat holds one value per key; a list that repeats one is not believed twice.
    let mut seen = BTreeSet::new();
    for (parsed, key, value) in ours {
        if !seen.insert(parsed.clone()) {
            bad.add(key, "the key is listed twice");
            continue;
        }
        if parsed != SummaryKey::Site {
            if read == ctx.limits.max_keys_per_site {
                bad.add(key, format_args!("over the cap of {} keys per site", ctx.limits.max_keys_per_site));
                continue;
            }
            read += 1;
        }
        let result = cache.get(node.site_id, &parsed, key, value).and_then(|decoded| {
            match (parsed, decoded) {
                (_, Value::Site(site)) => out.site = Some(site),
                (SummaryKey::Db(db), Value::Db(summary)) => {
                    let ahead = summary.latest_wall_ms().saturating_sub(ctx.now_ms);
                    if ahead > ctx.limits.max_clock_drift_ms {
                        return Err(format!(
                            "its clock reading is {ahead} ms ahead of this site's clock (at most {} ms allowed)",
                            ctx.limits.max_clock_drift_ms
                        ));
                    }
                    out.dbs.push((db, summary));
                }
                (SummaryKey::Replica(db, shard), Value::Replica(replica)) => out.replicas.push((db, shard, replica)),
                (SummaryKey::Plan(db), Value::Plan(plan)) => out.plans.push((db, plan)),
                (_, Value::Revocations(list)) => out.revocations = Some(list),
                // A load summary is only checked; `decode` gives each key its own kind.
                _ => {}
            }
            Ok(())
        });
        if let Err(error) = result {
            bad.add(key, error);
        }
    }
    bad.finish();
    out
}

fn is_following(r: &ReplicaSummary) -> bool {
    matches!(r.phase, ReplicaPhase::Following { .. })
}

/// Stage 3: every site's entry, and a warning for each dead site that holds replicas.
fn site_views(
    decoded: &BTreeMap<SiteId, (&NodeInput, Decoded)>,
    now_ms: u64,
    warnings: &mut Vec<Warning>,
) -> Vec<SiteView> {
    let mut sites = Vec::new();
    for (id, (node, d)) in decoded {
        let summary = d.site.as_ref();
        let state = match (node.live, summary.is_some_and(|s| s.leaving)) {
            (true, _) => SiteState::Live,
            (false, true) => SiteState::Left,
            (false, false) => SiteState::Dead,
        };
        let following = d.replicas.iter().filter(|(_, _, r)| is_following(r)).count() as u64;
        let held = d.replicas.len() as u64 - following;
        if state == SiteState::Dead && held > 0 {
            warnings.push(Warning::DeadSiteHoldsReplicas {
                site_id: *id,
                replicas: held,
                message: format!("dead site {} holds {held} replicas", id.short()),
            });
        }
        let certificate_expires_ms = summary.map(|s| s.certificate_expires_ms).filter(|ms| *ms > 0);
        if let Some(expires_ms) = certificate_expires_ms
            && state == SiteState::Live
            && expires_ms < now_ms.saturating_add(CERTIFICATE_WARNING_MS)
        {
            let message = match expires_ms.checked_sub(now_ms) {
                Some(left) => format!(
                    "the certificate of site {} expires in {} days ({} hours): renew it (cairn cluster \
                     issue-cert) and reload it (SIGHUP or cairn ctl reload)",
                    id.short(),
                    left / 86_400_000,
                    left / 3_600_000
                ),
                None => format!("the certificate of site {} has expired: renew and reload it", id.short()),
            };
            warnings.push(Warning::CertificateExpiring { site_id: *id, expires_ms, message });
        }
        sites.push(SiteView {
            certificate_expires_ms,
            site_id: *id,
            addr: summary.map_or_else(|| node.gossip_addr.to_string(), |s| s.addr.to_string()),
            role: summary.map_or(Role::Core, |s| s.role),
            state,
            generation: node.generation,
            version: summary.map(|s| s.version.to_string()).unwrap_or_default(),
            zone: summary.and_then(|s| s.zone.as_ref().map(ToString::to_string)),
            capacity: summary.map_or(100, |s| s.capacity),
            draining: summary.is_some_and(|s| s.draining),
            started_ms: summary.map_or(0, |s| s.started_ms),
            // A live site's heartbeat advances every round: left out, so an idle
            // cluster's view stays the same and wakes nobody.
            last_seen_ms: if state == SiteState::Live { None } else { node.last_seen_ms },
            replicas: held,
            bytes: d.replicas.iter().map(|(_, _, r)| r.bytes).fold(0, u64::saturating_add),
            following,
        });
    }
    sites
}

/// The records sites hold of each db name, at most `max_dbs` names: those this site
/// holds first, then those held by the most sites, then by name (a member inventing
/// names cannot push real dbs out of the view).
fn db_candidates(
    self_site: SiteId,
    decoded: &BTreeMap<SiteId, (&NodeInput, Decoded)>,
    limits: &ViewLimits,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<DbName, Vec<(SiteId, DbRecord)>> {
    let mut candidates: BTreeMap<DbName, Vec<(SiteId, DbRecord)>> = BTreeMap::new();
    for (id, (_, d)) in decoded {
        for (name, summary) in &d.dbs {
            candidates.entry(name.clone()).or_default().push((*id, summary.record(name.clone())));
        }
    }
    if candidates.len() > limits.max_dbs {
        let mut order: Vec<(bool, usize, DbName)> = candidates
            .iter()
            .map(|(name, holders)| {
                (!holders.iter().any(|(s, _)| *s == self_site), usize::MAX - holders.len(), name.clone())
            })
            .collect();
        order.sort();
        let total = order.len();
        for (_, _, name) in order.into_iter().skip(limits.max_dbs) {
            candidates.remove(&name);
        }
        warnings.push(Warning::Invalid {
            site_id: self_site,
            key: "db:*".into(),
            message: format!(
                "gossip names {total} dbs, over the cap of {}; {} are left out of the view",
                limits.max_dbs,
                total - limits.max_dbs
            ),
        });
    }
    candidates
}

/// Stage 4: every db that is not dropped, with its settings, placement, followers and
/// shard warnings; and the dropped names.
fn db_views(
    self_site: SiteId,
    decoded: &BTreeMap<SiteId, (&NodeInput, Decoded)>,
    live: &BTreeSet<SiteId>,
    limits: &ViewLimits,
    warnings: &mut Vec<Warning>,
) -> (Vec<DbView>, Vec<DroppedDb>) {
    let mut dbs = Vec::new();
    let mut dropped = Vec::new();
    for (name, holders) in db_candidates(self_site, decoded, limits, warnings) {
        let resolution = crate::settings::resolve(holders.iter().map(|(_, r)| r));
        if let Some(at) = resolution.dropped_at {
            dropped.push(DroppedDb { name: name.clone(), at, tombstone: resolution.tombstone.clone() });
        }
        let Some(winner) = resolution.current else { continue };
        conflict_warnings(&name, &holders, &winner, resolution.dropped_at, warnings);
        // A site whose own record of the name was dropped (it has not deleted its
        // replicas yet, or is down) holds replicas of the old db, not of this one.
        let ended: BTreeSet<SiteId> = holders
            .iter()
            .filter(|(_, r)| r.dropped || crate::settings::ended_by(r, resolution.dropped_at))
            .map(|(site, _)| *site)
            .collect();
        let placement = placement(&name, winner.settings.shards.get(), decoded, &ended, live);
        let db = DbView {
            name,
            settings: winner.settings,
            created: winner.created,
            origin: winner.origin,
            changed: winner.changed,
            supersedes: winner.supersedes,
            seal: winner.seal.clone(),
            placement,
        };
        shard_warnings(&db, live, warnings);
        dbs.push(db);
    }
    (dbs, dropped)
}

/// A `conflicting_db` warning for each holder of another creation's other settings.
fn conflict_warnings(
    name: &DbName,
    holders: &[(SiteId, DbRecord)],
    winner: &DbRecord,
    dropped_at: Option<Hlc>,
    warnings: &mut Vec<Warning>,
) {
    for (site, record) in holders {
        let other_creation = !record.dropped
            && !crate::settings::ended_by(record, dropped_at)
            && record.incarnation() != winner.incarnation();
        if other_creation && !record.same_settings(winner) {
            warnings.push(Warning::ConflictingDb {
                db: name.clone(),
                site_id: *site,
                message: format!(
                    "site {} holds db {name} as {} shards × {}; the cluster's settings are {} × {} (created first, by {})",
                    site.short(),
                    record.settings.shards,
                    record.settings.replication,
                    winner.settings.shards,
                    winner.settings.replication,
                    winner.origin.short()
                ),
            });
        }
    }
}

/// Each shard's replicas and followers (with their lag), by site id.
fn placement(
    name: &DbName,
    shards: u32,
    decoded: &BTreeMap<SiteId, (&NodeInput, Decoded)>,
    ended: &BTreeSet<SiteId>,
    live: &BTreeSet<SiteId>,
) -> Vec<ShardView> {
    let mut placement: Vec<ShardView> =
        (0..shards).map(|shard| ShardView { shard, replicas: Vec::new(), followers: Vec::new() }).collect();
    for (id, (_, d)) in decoded.iter().filter(|(id, _)| !ended.contains(id)) {
        for (_, shard, r) in d.replicas.iter().filter(|(db, shard, _)| db == name && *shard < shards) {
            let slot = &mut placement[*shard as usize];
            let (state, to) = match r.phase {
                ReplicaPhase::CatchingUp => (PlacementState::CatchingUp, None),
                ReplicaPhase::Ready => (PlacementState::Ready, None),
                ReplicaPhase::HandingOver { to } => (PlacementState::HandingOver, Some(to)),
                ReplicaPhase::Following { caught_up } => {
                    slot.followers.push(FollowerView {
                        site_id: *id,
                        state: FollowerState::Following,
                        caught_up,
                        entries: r.entries,
                        bytes: r.bytes,
                        frontier: r.frontier.clone(),
                        lag_entries: None,
                        progress: r.progress,
                    });
                    continue;
                }
            };
            slot.replicas.push(ReplicaView {
                site_id: *id,
                state,
                to,
                entries: r.entries,
                bytes: r.bytes,
                frontier: r.frontier.clone(),
                progress: r.progress,
            });
        }
    }
    for shard in &mut placement {
        let complete: Vec<&ReplicaView> =
            shard.replicas.iter().filter(|r| r.is_ready() && live.contains(&r.site_id)).collect();
        for follower in &mut shard.followers {
            follower.lag_entries =
                complete.iter().map(|r| r.frontier.entries_beyond(&follower.frontier)).max();
        }
    }
    placement
}

/// Stage 5: `under_replicated` and `lost_shards` warnings of one db.
fn shard_warnings(db: &DbView, live: &BTreeSet<SiteId>, warnings: &mut Vec<Warning>) {
    let name = &db.name;
    let short: Vec<u32> = db
        .placement
        .iter()
        .filter(|s| {
            let ready = s.replicas.iter().filter(|r| r.is_ready() && live.contains(&r.site_id)).count();
            (ready as u32) < db.replication()
        })
        .map(|s| s.shard)
        .collect();
    // Placed shards with no complete copy on a live site: no replica to recover from.
    let lost: Vec<u32> = db
        .placement
        .iter()
        .filter(|s| {
            !s.replicas.is_empty() && !s.replicas.iter().any(|r| r.is_complete() && live.contains(&r.site_id))
        })
        .map(|s| s.shard)
        .collect();
    if !lost.is_empty() {
        warnings.push(Warning::LostShards {
            db: name.clone(),
            message: format!(
                "db {name}: {} shards have no complete replica on a live site; their data is lost \
                 unless a site holding one comes back",
                lost.len()
            ),
            shards: lost,
        });
    }
    if !short.is_empty() {
        warnings.push(Warning::UnderReplicated {
            db: name.clone(),
            message: format!(
                "db {name}: {} of {} shards have fewer than {} ready replicas on live sites",
                short.len(),
                db.shards(),
                db.replication()
            ),
            shards: short,
        });
    }
}

/// Stage 6: the plans sites run, by db then site.
fn plan_views(decoded: &BTreeMap<SiteId, (&NodeInput, Decoded)>) -> Vec<PlanView> {
    let mut plans = Vec::new();
    for (id, (_, d)) in decoded {
        for (db, p) in &d.plans {
            plans.push(PlanView {
                db: db.clone(),
                site_id: *id,
                plan_id: p.plan_id,
                priority: p.priority,
                step: p.step,
                steps: p.steps,
                status: p.status.to_string(),
            });
        }
    }
    plans.sort_by(|a, b| (&a.db, a.site_id).cmp(&(&b.db, b.site_id)));
    plans
}

/// Builds the view `self_site` holds from every node's state, at `ctx.now_ms`.
pub fn build_view(self_site: SiteId, nodes: &[NodeInput], ctx: &ViewContext) -> ClusterView {
    build_view_cached(self_site, nodes, ctx, &mut DecodeCache::new())
}

/// [`build_view`], decoding only the values that changed since the build that last used
/// `cache` (the same view as without it: a value's decoding depends on its text alone).
pub fn build_view_cached(
    self_site: SiteId,
    nodes: &[NodeInput],
    ctx: &ViewContext,
    cache: &mut DecodeCache,
) -> ClusterView {
    cache.begin();
    let view = build(self_site, nodes, ctx, cache);
    cache.end();
    view
}

fn build(self_site: SiteId, nodes: &[NodeInput], ctx: &ViewContext, cache: &mut DecodeCache) -> ClusterView {
    let mut warnings = Vec::new();
    let newest = newest_sites(self_site, nodes, &ctx.limits, &mut warnings);
    let mut decoded = BTreeMap::new();
    for (id, node) in newest {
        let site = decode_site(node, ctx, cache, &mut warnings);
        // A node without a readable `site` summary is not a cairn site (honest sites
        // publish it first): what else it says is not taken in.
        if site.site.is_none() {
            warnings.push(Warning::Invalid {
                site_id: id,
                key: "site".into(),
                message: format!(
                    "site {} published no readable site summary; it is left out of the view",
                    id.short()
                ),
            });
            continue;
        }
        decoded.insert(id, (node, site));
    }
    let sites = site_views(&decoded, ctx.now_ms, &mut warnings);
    let live: BTreeSet<SiteId> =
        sites.iter().filter(|s| s.state == SiteState::Live).map(|s| s.site_id).collect();
    let (dbs, dropped) = db_views(self_site, &decoded, &live, &ctx.limits, &mut warnings);
    let plans = plan_views(&decoded);
    let revocations = decoded
        .values()
        .filter_map(|(_, d)| d.revocations.as_ref())
        .max_by(|a, b| (a.issued_ms, a.signed_bytes()).cmp(&(b.issued_ms, b.signed_bytes())))
        .cloned();
    ClusterView { site: self_site, sites, dbs, dropped, plans, warnings, revocations }
}
