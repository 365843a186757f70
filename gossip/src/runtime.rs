//! The running gossip of one site: chitchat, what the site publishes, and the view it
//! rebuilds from everyone's state (with a change stream).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_inventory::{ClusterId, SiteId, now_ms};
use cairn_transport::ClusterTrust;
use chitchat::transport::Transport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::decoded::DecodeCache;
use crate::name::{self, GossipName};
use crate::signed::{CERT_KEY, GossipedNode, GossipedValue, SigningKeys, Verifier, sign_value};
use crate::summary::{Change, SiteSnapshot, diff, summarize};
use crate::view::{ClusterView, ViewContext, ViewLimits, build_view, build_view_cached};

/// Gossip settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// Time between gossip rounds (and view rebuilds).
    pub interval: Duration,
    /// Addresses (`HOST:PORT`) to start gossiping with.
    pub seeds: Vec<String>,
    /// Phi above which the failure detector calls a site dead. Detection time is roughly
    /// `phi × mean heartbeat interval × ln 10`.
    pub phi_threshold: f64,
    /// Heartbeat intervals the failure detector remembers per site (memory grows with it).
    pub sampling_window: usize,
    /// How long a dead site stays in the view before it is forgotten.
    pub dead_site_grace: Duration,
    /// How long deleted keys keep their tombstones.
    pub tombstone_grace: Duration,
    /// What the view takes in from peers (caps, clock drift).
    pub limits: ViewLimits,
    /// chitchat compresses its digests itself (its protocol V1). Off by default: the
    /// site's QUIC transport compresses each whole message once, which costs a site
    /// less CPU. On for transports that do not compress (chitchat's in-memory channel,
    /// in tests and benches), and for clusters of many hundreds of sites, whose plain
    /// digests (about 57 bytes a site) would leave chitchat little room for state in
    /// each message: a message must fit in one 64 KiB UDP datagram.
    pub compressed_digests: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            seeds: Vec::new(),
            phi_threshold: 8.0,
            sampling_window: 100,
            dead_site_grace: Duration::from_secs(3600),
            tombstone_grace: Duration::from_secs(3600),
            limits: ViewLimits::default(),
            compressed_digests: false,
        }
    }
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// A setting out of range.
    #[error("invalid gossip setting {what}: {why}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// The rule.
        why: String,
    },
    /// chitchat failed to start.
    #[error("gossip: {0}")]
    Chitchat(String),
}

impl GossipConfig {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |what, why: &str| Err(GossipError::InvalidSetting { what, why: why.into() });
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(60) {
            return bad("interval", "must be between 10 ms and 60 s");
        }
        if !(1.0..=100.0).contains(&self.phi_threshold) {
            return bad("phi_threshold", "must be between 1 and 100");
        }
        if !(10..=10_000).contains(&self.sampling_window) {
            return bad("sampling_window", "must be between 10 and 10000");
        }
        let limits = &self.limits;
        if !(2..=100_000).contains(&limits.max_sites) {
            return bad("max_sites", "must be between 2 and 100000");
        }
        if !(16..=10_000_000).contains(&limits.max_keys_per_site) {
            return bad("max_keys_per_site", "must be between 16 and 10000000");
        }
        if !(1..=1_000_000).contains(&limits.max_dbs) {
            return bad("max_dbs", "must be between 1 and 1000000");
        }
        if !(1_000..=86_400_000).contains(&limits.max_clock_drift_ms) {
            return bad("max_clock_drift", "must be between 1 s and 1 day");
        }
        Ok(())
    }
}

/// How the view's rebuilds went: a build that panics (a bug met by some peer's value)
/// is counted and skipped, keeping the last good view.
#[derive(Debug, Default)]
struct ViewHealth {
    panics: AtomicU64,
    in_a_row: AtomicU64,
    /// Keys this site gossips, and their bytes (keys and signed values).
    published_keys: AtomicU64,
    published_bytes: AtomicU64,
}

/// What a site published last: the payloads (unsigned) by key, and which signing key
/// (by [`SigningKeys`] epoch) signed them.
#[derive(Debug, Default)]
struct Published {
    payloads: BTreeMap<String, String>,
    epoch: Option<u64>,
}

/// A site's gossip.
pub struct Gossip {
    handle: ChitchatHandle,
    health: Arc<ViewHealth>,
    site_id: SiteId,
    generation: u64,
    interval: Duration,
    keys: Arc<SigningKeys>,
    published: Mutex<Published>,
    view: watch::Receiver<Arc<ClusterView>>,
    view_task: JoinHandle<()>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip").field("site_id", &self.site_id).finish_non_exhaustive()
    }
}

impl Gossip {
    /// Starts gossiping as `site_id` of `cluster_id`, reachable at `addr`, publishing
    /// `snapshot` from the start, every value signed with `keys`; what peers gossip is
    /// taken into the view only if it checks against `trust` (see [`crate::signed`]).
    /// The generation is the start time in milliseconds, so every process start is a
    /// new generation.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        site_id: SiteId,
        cluster_id: ClusterId,
        addr: SocketAddr,
        transport: &dyn Transport,
        config: GossipConfig,
        snapshot: &SiteSnapshot,
        keys: Arc<SigningKeys>,
        trust: ClusterTrust,
    ) -> Result<Self, GossipError> {
        config.validate()?;
        let generation = now_ms();
        // chitchat names the node by its short gossip name (see `crate::name`); its
        // certificate says which site it is.
        let chitchat_id = ChitchatId::new(GossipName::of(site_id).to_string(), generation, addr);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: name::cluster_tag(cluster_id),
            gossip_interval: config.interval,
            listen_addr: addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: config.sampling_window,
                max_interval: Duration::from_secs(10).max(config.interval * 4),
                initial_interval: config.interval,
                dead_node_grace_period: config.dead_site_grace,
            },
            marked_for_deletion_grace_period: config.tombstone_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: if config.compressed_digests {
                chitchat::ProtocolVersion::V1
            } else {
                chitchat::ProtocolVersion::V0
            },
        };
        // Values are signed at the version chitchat sets them at, so they are set here,
        // not handed to chitchat to set.
        let handle = chitchat::spawn_chitchat(chitchat_config, Vec::new(), transport)
            .await
            .map_err(|e| GossipError::Chitchat(format!("{e:#}")))?;
        let (tx, rx) = watch::channel(Arc::new(build_view(site_id, &[], &ViewContext::at(now_ms()))));
        let health = Arc::new(ViewHealth::default());
        let view_task = tokio::spawn(view_loop(
            handle.chitchat(),
            site_id,
            config.interval,
            config.limits,
            Verifier::new(trust),
            tx,
            health.clone(),
        ));
        let gossip = Self {
            handle,
            health,
            site_id,
            generation,
            interval: config.interval,
            keys,
            published: Mutex::new(Published::default()),
            view: rx,
            view_task,
        };
        gossip.publish(snapshot).await;
        Ok(gossip)
    }

    /// Publishes what changed between the last published snapshot and this one, each
    /// value signed; after the signing key changed, the certificates and every value
    /// again. Answers how many keys were set or deleted.
    pub async fn publish(&self, snapshot: &SiteSnapshot) -> usize {
        let wanted = summarize(snapshot);
        let mut published = self.published.lock().await;
        let (epoch, signer, certificates) = self.keys.current();
        let rekeyed = published.epoch != Some(epoch);
        let changes = if rekeyed {
            let mut all: Vec<Change> =
                wanted.iter().map(|(k, v)| Change::Set(k.clone(), v.clone())).collect();
            all.extend(
                published.payloads.keys().filter(|k| !wanted.contains_key(*k)).cloned().map(Change::Delete),
            );
            all
        } else {
            diff(&published.payloads, &wanted)
        };
        if !changes.is_empty() || rekeyed {
            let chitchat = self.handle.chitchat();
            let mut chitchat = chitchat.lock().await;
            let state = chitchat.self_node_state();
            // The certificates first: chitchat hands a node's values to peers in version
            // order, so whoever gets a value signed with a new key has its certificate.
            if rekeyed {
                state.set(CERT_KEY, certificates);
            }
            for change in &changes {
                match change {
                    Change::Set(key, payload) => {
                        let version = state.max_version() + 1;
                        let value = sign_value(&signer, self.site_id, self.generation, version, key, payload);
                        state.set(key, value);
                    }
                    Change::Delete(key) => state.delete(key),
                }
            }
            published.payloads = wanted;
            published.epoch = Some(epoch);
            let (mut keys, mut bytes) = (0, 0);
            for (key, value) in state.key_values() {
                keys += 1;
                bytes += key.len() + value.len();
            }
            self.health.published_keys.store(keys, Ordering::Relaxed);
            self.health.published_bytes.store(bytes as u64, Ordering::Relaxed);
        }
        changes.len()
    }

    /// View builds that panicked since the start (each was skipped).
    pub fn view_panics(&self) -> u64 {
        self.health.panics.load(Ordering::Relaxed)
    }

    /// How many keys this site gossips, and their bytes (keys and signed values).
    pub fn published_size(&self) -> (u64, u64) {
        (
            self.health.published_keys.load(Ordering::Relaxed),
            self.health.published_bytes.load(Ordering::Relaxed),
        )
    }

    /// View builds in a row that panicked (0 once one succeeds).
    pub fn view_failures_in_a_row(&self) -> u64 {
        self.health.in_a_row.load(Ordering::Relaxed)
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes whenever the view changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// Says this site is leaving (published with `snapshot`, whose `site.leaving` is
    /// set here), then waits a few gossip rounds so peers hear it.
    pub async fn announce_leaving(&self, snapshot: &SiteSnapshot) {
        let mut leaving = snapshot.clone();
        leaving.site.leaving = true;
        self.publish(&leaving).await;
        tokio::time::sleep(self.interval * 4).await;
    }

    /// Stops gossiping.
    pub async fn shutdown(self) {
        self.view_task.abort();
        if let Err(error) = self.handle.shutdown().await {
            tracing::debug!(%error, "gossip stopped with an error");
        }
    }
}

/// A gossiped node: its name, generation and gossip address.
type NodeKey = (GossipName, u64, SocketAddr);

/// The longest the view goes without a rebuild, even when gossip brought nothing new.
const REBUILD_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

/// What a node's input to the view build is made of, short of its values: the same
/// key means the same values (chitchat bumps `max_version` with every change).
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputsKey {
    name: GossipName,
    generation: u64,
    addr: SocketAddr,
    live: bool,
    max_version: u64,
    /// When a node that is not live was last seen (the view shows it).
    last_seen_ms: Option<u64>,
}

impl InputsKey {
    fn of(node: &GossipedNode) -> Self {
        Self {
            name: node.name,
            generation: node.generation,
            addr: node.gossip_addr,
            live: node.live,
            max_version: node.max_version,
            last_seen_ms: if node.live { None } else { node.last_seen_ms },
        }
    }
}

/// Rebuilds the view every round in which gossip brought something new (and every few
/// seconds regardless); publishes it when it changed.
async fn view_loop(
    chitchat: Arc<Mutex<chitchat::Chitchat>>,
    site_id: SiteId,
    interval: Duration,
    limits: ViewLimits,
    mut verifier: Verifier,
    tx: watch::Sender<Arc<ClusterView>>,
    health: Arc<ViewHealth>,
) {
    // Each node's last heartbeat and when it changed, by (name, generation, address).
    let mut heartbeats: HashMap<NodeKey, (u64, u64)> = HashMap::new();
    // Values that did not change since the last round are not decoded again.
    let mut decoded = DecodeCache::new();
    // What the last build was made from, and when: a round whose inputs are the same
    // (every node's generation, liveness and max version) is skipped, up to a rebuild
    // every REBUILD_AT_LEAST_EVERY for what depends on the time alone (clock-drift
    // checks, certificate expiry warnings).
    let mut last_inputs: Vec<InputsKey> = Vec::new();
    let mut last_build = std::time::Instant::now();
    let mut revoked_issued = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let inputs = {
            let chitchat = chitchat.lock().await;
            let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
            let now = now_ms();
            let mut inputs = Vec::with_capacity(chitchat.node_states().len());
            for (id, state) in chitchat.node_states() {
                let Ok(name) = id.node_id.parse::<GossipName>() else { continue };
                let node = (name, id.generation_id, id.gossip_advertise_addr);
                let beat = u64::from(state.heartbeat());
                let seen = heartbeats.entry(node).or_insert((beat, now));
                if seen.0 != beat {
                    *seen = (beat, now);
                }
                // Values are copied out only when they changed since the last round.
                let max_version = state.max_version();
                let checked =
                    verifier.has_seen(name, id.generation_id, id.gossip_advertise_addr, max_version);
                let values = (!checked).then(|| {
                    state
                        .key_values_including_deleted()
                        .filter(|(_, v)| !v.is_deleted())
                        .map(|(k, v)| GossipedValue {
                            key: k.to_owned(),
                            value: v.value.clone(),
                            version: v.version,
                        })
                        .collect()
                });
                inputs.push(GossipedNode {
                    name,
                    generation: id.generation_id,
                    gossip_addr: id.gossip_advertise_addr,
                    live: live.contains(id),
                    last_seen_ms: Some(seen.1),
                    max_version,
                    values,
                });
            }
            // Forget heartbeats of nodes chitchat no longer holds.
            if heartbeats.len() > inputs.len() {
                let known: std::collections::HashSet<NodeKey> =
                    inputs.iter().map(|n| (n.name, n.generation, n.gossip_addr)).collect();
                heartbeats.retain(|node, _| known.contains(node));
            }
            inputs
        };
        let key: Vec<InputsKey> = inputs.iter().map(InputsKey::of).collect();
        if key == last_inputs && last_build.elapsed() < REBUILD_AT_LEAST_EVERY {
            continue;
        }
        (last_inputs, last_build) = (key, std::time::Instant::now());
        let ctx = ViewContext { now_ms: now_ms(), limits };
        let build = || build_view_cached(site_id, &verifier.admit(inputs, ctx.now_ms), &ctx, &mut decoded);
        let view = match std::panic::catch_unwind(AssertUnwindSafe(build)) {
            Ok(view) => {
                health.in_a_row.store(0, Ordering::Relaxed);
                // Nodes whose certificates the newest list revokes are left out from
                // the next round on.
                if let Some(list) = &view.revocations {
                    if revoked_issued != Some(list.issued_ms) {
                        // A new list: the nodes it names leave the next build, which
                        // must therefore happen even if gossip brings nothing new.
                        revoked_issued = Some(list.issued_ms);
                        last_inputs.clear();
                    }
                    verifier.revoke(list);
                }
                view
            }
            Err(_) => {
                decoded = DecodeCache::new();
                // Tried again next round, not after REBUILD_AT_LEAST_EVERY.
                last_inputs.clear();
                health.panics.fetch_add(1, Ordering::Relaxed);
                let in_a_row = health.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(in_a_row, "building the cluster view panicked; keeping the last view");
                continue;
            }
        };
        tx.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }
}
