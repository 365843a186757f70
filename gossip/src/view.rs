//! The cluster view: what every site publishes, merged into one typed picture.
//!
//! [`build_view`] is a pure function of plain inputs (one [`NodeInput`] per chitchat
//! node), so it is tested without a network. Its output serialises to the JSON that
//! `cairn dump --format json` prints (the schema is documented in the README).
//!
//! Rules:
//! - one entry per site id: the node with the highest generation (the newest process);
//! - a site is `live` if chitchat's failure detector says so, else `left` if its last
//!   summary said it was leaving, else `dead`;
//! - a db's settings are resolved by [`crate::settings::resolve`]: drops end earlier
//!   creations, then the earliest creation by HLC (ties: the lower origin site id), then
//!   its latest change — the same on every site whatever the clocks say; sites holding
//!   another creation's different settings are listed as a `conflicting_db` warning;
//!   dropped names are listed in `dropped`;
//! - a replicant's copies (phase `following`) are listed apart from the placement, as a
//!   shard's `followers` with how many entries they lack, so nothing that counts
//!   replicas (planners, warnings, handovers) ever sees them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cairn_inventory::{DbName, Hlc, PlanId, Retention, Role, SiteId};
use serde::{Deserialize, Serialize};

use crate::summary::{
    CatchUpProgress, DbSummary, LoadSummary, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSummary,
    SummaryKey, decode_value,
};

/// One chitchat node's state, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    /// The site id (chitchat node id).
    pub site_id: SiteId,
    /// The process generation.
    pub generation: u64,
    /// The address chitchat gossips with.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector considers it live.
    pub live: bool,
    /// When this node last saw its heartbeat advance (ms since the Unix epoch).
    pub last_seen_ms: Option<u64>,
    /// Its key/values (tombstones excluded).
    pub key_values: Vec<(String, String)>,
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
    /// When its heartbeat last advanced, as seen here.
    pub last_seen_ms: Option<u64>,
    /// Replicas it holds (placement replicas only; not a replicant's copies).
    pub replicas: u64,
    /// Payload bytes it holds (copies included).
    pub bytes: u64,
    /// A replicant's read-only copies of shards it follows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub following: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One replica in a db's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaView {
    /// The holding site.
    pub site_id: SiteId,
    /// `catching_up`, `ready` or `handing_over`.
    pub state: String,
    /// For `handing_over`: the site taking over.
    pub to: Option<SiteId>,
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// Per origin site, the seq up to which everything is held.
    pub frontier: Vec<(SiteId, u64)>,
    /// While catching up: how far along it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<CatchUpProgress>,
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

/// A replicant's copy of a shard (state `following`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowerView {
    /// The replicant site.
    pub site_id: SiteId,
    /// Always `following`.
    pub state: String,
    /// Whether it has caught up once; until then it serves no reads.
    pub caught_up: bool,
    /// Entries held.
    pub entries: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// Per origin site, the seq up to which everything is held.
    pub frontier: Vec<(SiteId, u64)>,
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
    /// Shard count.
    pub shards: u32,
    /// Replication factor.
    pub replication: u32,
    /// Retention.
    pub retention: Retention,
    /// Creation time (HLC).
    pub created: Hlc,
    /// The creating site.
    pub origin: SiteId,
    /// When the settings last changed (HLC; `created` if never).
    pub changed: Hlc,
    /// The latest drop of the name this db was created after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<Hlc>,
    /// Every shard, in order, with its replicas.
    pub placement: Vec<ShardView>,
}

impl DbView {
    /// The db's settings as an inventory record (what a site stores when it first
    /// takes a replica of a db it learned of through gossip).
    pub fn record(&self) -> cairn_inventory::DbRecord {
        cairn_inventory::DbRecord {
            name: self.name.clone(),
            shards: self.shards,
            replication: self.replication,
            retention: self.retention,
            created: self.created,
            origin: self.origin,
            changed: self.changed,
            dropped: false,
            supersedes: self.supersedes,
        }
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
    /// A site published a value this build cannot read.
    Undecodable {
        /// The site.
        site_id: SiteId,
        /// The key.
        key: String,
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
}

/// What one site published, decoded.
#[derive(Default)]
struct Decoded {
    site: Option<SiteSummary>,
    dbs: Vec<(DbName, DbSummary)>,
    replicas: Vec<(DbName, u32, ReplicaSummary)>,
    plans: Vec<(DbName, PlanSummary)>,
}

fn decode_node(node: &NodeInput, warnings: &mut Vec<Warning>) -> Decoded {
    let mut out = Decoded::default();
    for (key, value) in &node.key_values {
        let Some(parsed) = SummaryKey::parse(key) else { continue };
        let bad = |error: String| Warning::Undecodable {
            site_id: node.site_id,
            key: key.clone(),
            message: format!(
                "site {} published {key} that this build cannot read: {error}",
                node.site_id.short()
            ),
        };
        let result = match parsed {
            SummaryKey::Site => decode_value(value).map(|v| out.site = Some(v)),
            SummaryKey::Load => decode_value::<LoadSummary>(value).map(drop),
            SummaryKey::Db(db) => decode_value(value).map(|v| out.dbs.push((db, v))),
            SummaryKey::Replica(db, shard) => decode_value(value).map(|v| out.replicas.push((db, shard, v))),
            SummaryKey::Plan(db) => decode_value(value).map(|v| out.plans.push((db, v))),
        };
        if let Err(error) = result {
            warnings.push(bad(error));
        }
    }
    out
}

fn phase_name(phase: ReplicaPhase) -> (&'static str, Option<SiteId>) {
    match phase {
        ReplicaPhase::CatchingUp => ("catching_up", None),
        ReplicaPhase::Ready => ("ready", None),
        ReplicaPhase::HandingOver { to } => ("handing_over", Some(to)),
        ReplicaPhase::Following { .. } => ("following", None),
    }
}

fn is_following(r: &ReplicaSummary) -> bool {
    matches!(r.phase, ReplicaPhase::Following { .. })
}

/// How many entries frontier `a` holds beyond frontier `b`: per origin, the seqs `a`
/// covers above `b`'s, summed (saturating: frontiers come from the network).
pub fn entries_beyond(a: &[(SiteId, u64)], b: &[(SiteId, u64)]) -> u64 {
    let theirs: BTreeMap<SiteId, u64> = b.iter().copied().collect();
    a.iter()
        .map(|(origin, seq)| seq.saturating_sub(theirs.get(origin).copied().unwrap_or(0)))
        .fold(0, u64::saturating_add)
}

/// Builds the view `self_site` holds from every node's state.
pub fn build_view(self_site: SiteId, nodes: &[NodeInput]) -> ClusterView {
    let mut warnings = Vec::new();
    // The newest generation of each site.
    // Ties (which chitchat does not produce) are broken so the result never depends
    // on input order.
    let rank = |n: &NodeInput| (n.generation, n.live, n.gossip_addr);
    let mut newest: BTreeMap<SiteId, &NodeInput> = BTreeMap::new();
    for node in nodes {
        let slot = newest.entry(node.site_id).or_insert(node);
        if rank(node) > rank(slot) {
            *slot = node;
        }
    }
    let decoded: BTreeMap<SiteId, (&NodeInput, Decoded)> =
        newest.into_iter().map(|(id, node)| (id, (node, decode_node(node, &mut warnings)))).collect();

    let mut sites = Vec::new();
    for (id, (node, d)) in &decoded {
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
        sites.push(SiteView {
            site_id: *id,
            addr: summary.map_or_else(|| node.gossip_addr.to_string(), |s| s.addr.clone()),
            role: summary.map_or(Role::Core, |s| s.role),
            state,
            generation: node.generation,
            version: summary.map(|s| s.version.clone()).unwrap_or_default(),
            zone: summary.and_then(|s| s.zone.clone()),
            capacity: summary.map_or(100, |s| s.capacity),
            draining: summary.is_some_and(|s| s.draining),
            started_ms: summary.map_or(0, |s| s.started_ms),
            last_seen_ms: node.last_seen_ms,
            replicas: held,
            bytes: d.replicas.iter().map(|(_, _, r)| r.bytes).fold(0, u64::saturating_add),
            following,
        });
    }
    let live: BTreeMap<SiteId, bool> =
        sites.iter().map(|s| (s.site_id, s.state == SiteState::Live)).collect();

    // Db settings: see `crate::settings`.
    let mut candidates: BTreeMap<DbName, Vec<(SiteId, cairn_inventory::DbRecord)>> = BTreeMap::new();
    for (id, (_, d)) in &decoded {
        for (name, summary) in &d.dbs {
            candidates.entry(name.clone()).or_default().push((*id, summary.record(name.clone())));
        }
    }
    let mut dbs = Vec::new();
    let mut dropped = Vec::new();
    for (name, holders) in candidates {
        let resolution = crate::settings::resolve(holders.iter().map(|(_, r)| r));
        if let Some(at) = resolution.dropped_at {
            dropped.push(DroppedDb { name: name.clone(), at });
        }
        let Some(winner) = resolution.current else { continue };
        for (site, record) in &holders {
            let other_creation = !record.dropped
                && !crate::settings::ended_by(record, resolution.dropped_at)
                && record.incarnation() != winner.incarnation();
            if other_creation && !record.same_settings(&winner) {
                warnings.push(Warning::ConflictingDb {
                    db: name.clone(),
                    site_id: *site,
                    message: format!(
                        "site {} holds db {name} as {} shards × {}; the cluster's settings are {} × {} (created first, by {})",
                        site.short(),
                        record.shards,
                        record.replication,
                        winner.shards,
                        winner.replication,
                        winner.origin.short()
                    ),
                });
            }
        }
        let mut placement: Vec<ShardView> = (0..winner.shards)
            .map(|shard| ShardView { shard, replicas: Vec::new(), followers: Vec::new() })
            .collect();
        // A site whose own record of the name was dropped (it has not deleted its
        // replicas yet, or is down) holds replicas of the old db, not of this one.
        let ended: Vec<SiteId> = holders
            .iter()
            .filter(|(_, r)| r.dropped || crate::settings::ended_by(r, resolution.dropped_at))
            .map(|(site, _)| *site)
            .collect();
        for (id, (_, d)) in &decoded {
            if ended.contains(id) {
                continue;
            }
            for (db, shard, r) in &d.replicas {
                if db != &name || *shard >= winner.shards {
                    continue;
                }
                let slot = &mut placement[*shard as usize];
                if let ReplicaPhase::Following { caught_up } = r.phase {
                    slot.followers.push(FollowerView {
                        site_id: *id,
                        state: "following".to_owned(),
                        caught_up,
                        entries: r.entries,
                        bytes: r.bytes,
                        frontier: r.frontier.clone(),
                        lag_entries: None,
                        progress: r.progress,
                    });
                    continue;
                }
                let (state, to) = phase_name(r.phase);
                slot.replicas.push(ReplicaView {
                    site_id: *id,
                    state: state.to_owned(),
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
                shard.replicas.iter().filter(|r| r.state == "ready" && live[&r.site_id]).collect();
            for follower in &mut shard.followers {
                follower.lag_entries =
                    complete.iter().map(|r| entries_beyond(&r.frontier, &follower.frontier)).max();
            }
        }
        let short: Vec<u32> = placement
            .iter()
            .filter(|s| {
                let ready = s.replicas.iter().filter(|r| r.state == "ready" && live[&r.site_id]).count();
                (ready as u32) < winner.replication
            })
            .map(|s| s.shard)
            .collect();
        // Placed shards with no complete copy on a live site: no replica to recover from.
        let lost: Vec<u32> = placement
            .iter()
            .filter(|s| {
                !s.replicas.is_empty()
                    && !s
                        .replicas
                        .iter()
                        .any(|r| (r.state == "ready" || r.state == "handing_over") && live[&r.site_id])
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
                    winner.shards,
                    winner.replication
                ),
                shards: short,
            });
        }
        dbs.push(DbView {
            name,
            shards: winner.shards,
            replication: winner.replication,
            retention: winner.retention,
            created: winner.created,
            origin: winner.origin,
            changed: winner.changed,
            supersedes: winner.supersedes,
            placement,
        });
    }

    let mut plans = Vec::new();
    for (id, (_, d)) in &decoded {
        for (db, p) in &d.plans {
            plans.push(PlanView {
                db: db.clone(),
                site_id: *id,
                plan_id: p.plan_id,
                priority: p.priority,
                step: p.step,
                steps: p.steps,
                status: p.status.clone(),
            });
        }
    }
    plans.sort_by(|a, b| (&a.db, a.site_id).cmp(&(&b.db, b.site_id)));
    ClusterView { site: self_site, sites, dbs, dropped, plans, warnings }
}
