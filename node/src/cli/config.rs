//! A site's settings, merged from flags, `CAIRN_*` environment variables, a TOML file
//! and defaults — in that order of precedence.
//!
//! Every field of [`FileConfig`] is optional; `cairn start --print-config` prints the
//! merged result in the same TOML shape, so it can be saved and edited.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_gossip::GossipConfig;
use cairn_inventory::{InventoryConfig, Role};
use cairn_node::data::DataConfig;
use cairn_node::site::{DEFAULT_LOST_AFTER, SiteOptions};
use cairn_transport::TransportConfig;
use serde::{Deserialize, Serialize};

const MIB: usize = 1 << 20;

/// Most async worker threads a site may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// Async worker threads when the settings name none: half the cores, at least one.
///
/// A site's async work is light (QUIC packets, gossip, decoding requests); what is heavy,
/// LMDB transactions and their fsyncs, runs on the blocking pool, which the other half
/// of the cores is left to. Measured on a 2-core machine (bench/README, `gossip-procs`
/// and `nats`): one worker instead of two lowers an idle site's CPU by a tenth at 100
/// sites and leaves 3 sites' acknowledged publish rate as it was or a little higher.
/// (Why, as far as the profile shows: the runtime's parking and waking was a fifth of
/// an idle site's time, and tokio wakes an idle worker to steal work it then rarely
/// finds; how many wake-ups did so was not counted.)
pub(crate) fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

/// The TOML file (and the printed merged config). Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) role: Option<Role>,
    /// Dbs a replicant keeps a read-only copy of.
    pub(crate) follow: Option<Vec<String>>,
    pub(crate) seeds: Option<Vec<String>>,
    pub(crate) zone: Option<String>,
    pub(crate) capacity: Option<u32>,
    /// Threads that run the site's async work (QUIC, gossip, requests).
    pub(crate) worker_threads: Option<usize>,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) http_listen: Option<SocketAddr>,
    #[serde(default)]
    pub(crate) gossip: GossipSection,
    #[serde(default)]
    pub(crate) transport: TransportSection,
    #[serde(default)]
    pub(crate) inventory: InventorySection,
    #[serde(default)]
    pub(crate) data: DataSection,
    #[serde(default)]
    pub(crate) placement: PlacementSection,
    #[serde(default)]
    pub(crate) limits: LimitsSection,
}

/// `[limits]`: what peers and clients may cost this site, and what it believes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    /// A peer's db settings whose clock reading is further ahead than this are ignored.
    pub(crate) max_clock_drift_secs: Option<u64>,
    /// Dbs in the view (dropped ones included); creations beyond are refused.
    pub(crate) max_dbs: Option<usize>,
    /// Sites in the view.
    pub(crate) max_sites: Option<usize>,
    /// Gossip keys read from one site.
    pub(crate) max_keys_per_site: Option<usize>,
    /// Pull streams served to one peer at once.
    pub(crate) max_pulls_per_peer: Option<usize>,
    /// Pull streams served at once.
    pub(crate) max_pulls: Option<usize>,
    /// Seconds a pull receiver may take no byte before its stream ends.
    pub(crate) pull_stall_secs: Option<u64>,
    /// Reads served to one peer at once.
    pub(crate) max_reads_per_peer: Option<usize>,
    /// Handshakes in progress from one source address.
    pub(crate) max_handshakes_per_addr: Option<usize>,
    /// Connections open from one source address.
    pub(crate) max_connections_per_addr: Option<usize>,
}

/// `[placement]`: what automation does on its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlacementSection {
    /// Seconds a site must be dead before its shards are recovered on other sites.
    pub(crate) lost_after_secs: Option<u64>,
    /// Recover shards of lost sites and trim over-replicated ones automatically.
    pub(crate) auto_repair: Option<bool>,
    /// Rebalance after joins (and empty draining sites) automatically.
    pub(crate) auto_rebalance: Option<bool>,
}

/// `[data]`: shard data streams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataSection {
    /// Catch-up throughput cap, KiB/s over all catch-up streams (0: none).
    pub(crate) catch_up_limit_kib: Option<u64>,
    /// Payload KiB per pull batch.
    pub(crate) batch_kib: Option<usize>,
}

/// `[gossip]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GossipSection {
    pub(crate) interval_ms: Option<u64>,
    pub(crate) phi_threshold: Option<f64>,
    pub(crate) sampling_window: Option<usize>,
    pub(crate) dead_site_grace_secs: Option<u64>,
    pub(crate) compressed_digests: Option<bool>,
}

/// `[transport]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransportSection {
    pub(crate) max_frame_bytes: Option<usize>,
    pub(crate) max_concurrent_streams: Option<u32>,
    pub(crate) stream_receive_window: Option<u64>,
    pub(crate) connection_receive_window: Option<u64>,
    pub(crate) idle_timeout_ms: Option<u64>,
    pub(crate) keep_alive_ms: Option<u64>,
    pub(crate) handshake_timeout_ms: Option<u64>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) request_timeout_ms: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) mtu_upper_bound: Option<u16>,
    /// `cubic` or `bbr`.
    pub(crate) congestion: Option<cairn_transport::Congestion>,
}

/// `[inventory]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InventorySection {
    pub(crate) map_size_mib: Option<usize>,
    pub(crate) map_growth_mib: Option<usize>,
    pub(crate) max_map_size_mib: Option<usize>,
    pub(crate) plan_history_limit: Option<usize>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// `self` where set, else `lower`.
    pub(crate) fn over(self, lower: Self) -> Self {
        Self {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            role: self.role.or(lower.role),
            follow: self.follow.or(lower.follow),
            seeds: self.seeds.or(lower.seeds),
            zone: self.zone.or(lower.zone),
            capacity: self.capacity.or(lower.capacity),
            worker_threads: self.worker_threads.or(lower.worker_threads),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            http_listen: self.http_listen.or(lower.http_listen),
            gossip: GossipSection {
                interval_ms: self.gossip.interval_ms.or(lower.gossip.interval_ms),
                phi_threshold: self.gossip.phi_threshold.or(lower.gossip.phi_threshold),
                sampling_window: self.gossip.sampling_window.or(lower.gossip.sampling_window),
                dead_site_grace_secs: self.gossip.dead_site_grace_secs.or(lower.gossip.dead_site_grace_secs),
                compressed_digests: self.gossip.compressed_digests.or(lower.gossip.compressed_digests),
            },
            transport: TransportSection {
                max_frame_bytes: self.transport.max_frame_bytes.or(lower.transport.max_frame_bytes),
                max_concurrent_streams: self
                    .transport
                    .max_concurrent_streams
                    .or(lower.transport.max_concurrent_streams),
                stream_receive_window: self
                    .transport
                    .stream_receive_window
                    .or(lower.transport.stream_receive_window),
                connection_receive_window: self
                    .transport
                    .connection_receive_window
                    .or(lower.transport.connection_receive_window),
                idle_timeout_ms: self.transport.idle_timeout_ms.or(lower.transport.idle_timeout_ms),
                keep_alive_ms: self.transport.keep_alive_ms.or(lower.transport.keep_alive_ms),
                handshake_timeout_ms: self
                    .transport
                    .handshake_timeout_ms
                    .or(lower.transport.handshake_timeout_ms),
                connect_timeout_ms: self.transport.connect_timeout_ms.or(lower.transport.connect_timeout_ms),
                request_timeout_ms: self.transport.request_timeout_ms.or(lower.transport.request_timeout_ms),
                max_connections: self.transport.max_connections.or(lower.transport.max_connections),
                mtu_upper_bound: self.transport.mtu_upper_bound.or(lower.transport.mtu_upper_bound),
                congestion: self.transport.congestion.or(lower.transport.congestion),
            },
            inventory: InventorySection {
                map_size_mib: self.inventory.map_size_mib.or(lower.inventory.map_size_mib),
                map_growth_mib: self.inventory.map_growth_mib.or(lower.inventory.map_growth_mib),
                max_map_size_mib: self.inventory.max_map_size_mib.or(lower.inventory.max_map_size_mib),
                plan_history_limit: self.inventory.plan_history_limit.or(lower.inventory.plan_history_limit),
            },
            data: DataSection {
                catch_up_limit_kib: self.data.catch_up_limit_kib.or(lower.data.catch_up_limit_kib),
                batch_kib: self.data.batch_kib.or(lower.data.batch_kib),
            },
            placement: PlacementSection {
                lost_after_secs: self.placement.lost_after_secs.or(lower.placement.lost_after_secs),
                auto_repair: self.placement.auto_repair.or(lower.placement.auto_repair),
                auto_rebalance: self.placement.auto_rebalance.or(lower.placement.auto_rebalance),
            },
            limits: {
                let (a, b) = (self.limits, lower.limits);
                LimitsSection {
                    max_clock_drift_secs: a.max_clock_drift_secs.or(b.max_clock_drift_secs),
                    max_dbs: a.max_dbs.or(b.max_dbs),
                    max_sites: a.max_sites.or(b.max_sites),
                    max_keys_per_site: a.max_keys_per_site.or(b.max_keys_per_site),
                    max_pulls_per_peer: a.max_pulls_per_peer.or(b.max_pulls_per_peer),
                    max_pulls: a.max_pulls.or(b.max_pulls),
                    pull_stall_secs: a.pull_stall_secs.or(b.pull_stall_secs),
                    max_reads_per_peer: a.max_reads_per_peer.or(b.max_reads_per_peer),
                    max_handshakes_per_addr: a.max_handshakes_per_addr.or(b.max_handshakes_per_addr),
                    max_connections_per_addr: a.max_connections_per_addr.or(b.max_connections_per_addr),
                }
            },
        }
    }

    /// Every setting at its default (the data dir has none).
    pub(crate) fn defaults() -> Self {
        let g = GossipConfig::default();
        let t = TransportConfig::default();
        let i = InventoryConfig::default();
        let ms = |d: Duration| Some(d.as_millis() as u64);
        Self {
            data_dir: None,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 7001))),
            role: Some(Role::Core),
            follow: Some(Vec::new()),
            seeds: Some(Vec::new()),
            zone: None,
            capacity: Some(100),
            worker_threads: Some(default_worker_threads()),
            metrics_listen: None,
            http_listen: None,
            gossip: GossipSection {
                interval_ms: ms(g.interval),
                phi_threshold: Some(g.phi_threshold),
                sampling_window: Some(g.sampling_window),
                dead_site_grace_secs: Some(g.dead_site_grace.as_secs()),
                compressed_digests: Some(g.compressed_digests),
            },
            transport: TransportSection {
                max_frame_bytes: Some(t.max_frame_bytes),
                max_concurrent_streams: Some(t.max_concurrent_streams),
                stream_receive_window: Some(t.stream_receive_window),
                connection_receive_window: Some(t.connection_receive_window),
                idle_timeout_ms: ms(t.idle_timeout),
                keep_alive_ms: ms(t.keep_alive),
                handshake_timeout_ms: ms(t.handshake_timeout),
                connect_timeout_ms: ms(t.connect_timeout),
                request_timeout_ms: ms(t.request_timeout),
                max_connections: Some(t.max_connections),
                mtu_upper_bound: t.mtu_upper_bound,
                congestion: Some(t.congestion),
            },
            inventory: InventorySection {
                map_size_mib: Some(i.map_size / MIB),
                map_growth_mib: Some(i.map_growth / MIB),
                max_map_size_mib: Some(i.max_map_size / MIB),
                plan_history_limit: Some(i.plan_history_limit),
            },
            data: DataSection {
                catch_up_limit_kib: Some(0),
                batch_kib: Some(DataConfig::default().batch_bytes / 1024),
            },
            placement: PlacementSection {
                lost_after_secs: Some(DEFAULT_LOST_AFTER.as_secs()),
                auto_repair: Some(true),
                auto_rebalance: Some(true),
            },
            limits: {
                let (v, dc) = (g.limits, DataConfig::default());
                LimitsSection {
                    max_clock_drift_secs: Some(v.max_clock_drift_ms / 1000),
                    max_dbs: Some(v.max_dbs),
                    max_sites: Some(v.max_sites),
                    max_keys_per_site: Some(v.max_keys_per_site),
                    max_pulls_per_peer: Some(dc.max_pulls_per_peer),
                    max_pulls: Some(dc.max_pulls),
                    pull_stall_secs: Some(dc.pull_stall.as_secs()),
                    max_reads_per_peer: Some(dc.max_reads_per_peer),
                    max_handshakes_per_addr: Some(t.max_handshakes_per_addr),
                    max_connections_per_addr: Some(t.max_connections_per_addr),
                }
            },
        }
    }

    /// The number of async worker threads these settings ask for, checked.
    pub(crate) fn worker_threads(&self) -> anyhow::Result<usize> {
        let threads = self.worker_threads.unwrap_or_else(default_worker_threads);
        if !(1..=MAX_WORKER_THREADS).contains(&threads) {
            bail!("invalid worker_threads {threads}: must be between 1 and {MAX_WORKER_THREADS}");
        }
        Ok(threads)
    }

    /// The site options these settings describe, checked.
    pub(crate) fn to_options(&self) -> anyhow::Result<SiteOptions> {
        let Some(data_dir) = self.data_dir.clone() else {
            bail!("no data dir: give --data-dir, CAIRN_DATA_DIR or data_dir in the config file");
        };
        let d = Self::defaults();
        let pick = |a: Option<u64>, b: Option<u64>| Duration::from_millis(a.or(b).unwrap_or_default());
        let mut o = SiteOptions::new(
            data_dir,
            self.listen.or(d.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001))),
        );
        o.role = self.role.unwrap_or_default();
        for name in self.follow.iter().flatten() {
            let db = cairn_inventory::DbName::new(name)
                .map_err(|e| anyhow::anyhow!("invalid --follow {name:?}: {e}"))?;
            if !o.follow.contains(&db) {
                o.follow.push(db);
            }
        }
        if !o.follow.is_empty() && o.role != Role::Replicant {
            bail!(
                "--follow is for replicant sites: add --role replicant (core sites hold the replicas planners give them)"
            );
        }
        o.zone = match &self.zone {
            Some(zone) => Some(
                cairn_gossip::summary::Label::new(zone.clone())
                    .map_err(|why| anyhow::anyhow!("invalid zone: {why}"))?,
            ),
            None => None,
        };
        o.capacity = self.capacity.unwrap_or(100);
        o.metrics_listen = self.metrics_listen;
        o.http_listen = self.http_listen;
        if !(1..=10_000).contains(&o.capacity) {
            bail!("invalid capacity {}: must be between 1 and 10000", o.capacity);
        }
        let (g, dg) = (&self.gossip, &d.gossip);
        o.gossip = GossipConfig {
            interval: pick(g.interval_ms, dg.interval_ms),
            seeds: self.seeds.clone().unwrap_or_default(),
            phi_threshold: g.phi_threshold.or(dg.phi_threshold).unwrap_or(8.0),
            sampling_window: g.sampling_window.or(dg.sampling_window).unwrap_or(100),
            dead_site_grace: Duration::from_secs(
                g.dead_site_grace_secs.or(dg.dead_site_grace_secs).unwrap_or(3600),
            ),
            compressed_digests: g.compressed_digests.or(dg.compressed_digests).unwrap_or(false),
            ..GossipConfig::default()
        };
        let (l, view) = (&self.limits, o.gossip.limits);
        o.gossip.limits = cairn_gossip::view::ViewLimits {
            max_sites: l.max_sites.unwrap_or(view.max_sites),
            max_keys_per_site: l.max_keys_per_site.unwrap_or(view.max_keys_per_site),
            max_dbs: l.max_dbs.unwrap_or(view.max_dbs),
            max_clock_drift_ms: l
                .max_clock_drift_secs
                .map_or(view.max_clock_drift_ms, |s| s.saturating_mul(1000)),
        };
        o.gossip.validate()?;
        let (t, dt) = (&self.transport, &d.transport);
        let base = TransportConfig::default();
        o.transport = TransportConfig {
            max_frame_bytes: t.max_frame_bytes.unwrap_or(base.max_frame_bytes),
            max_concurrent_streams: t.max_concurrent_streams.unwrap_or(base.max_concurrent_streams),
            stream_receive_window: t.stream_receive_window.unwrap_or(base.stream_receive_window),
            connection_receive_window: t.connection_receive_window.unwrap_or(base.connection_receive_window),
            idle_timeout: pick(t.idle_timeout_ms, dt.idle_timeout_ms),
            keep_alive: pick(t.keep_alive_ms, dt.keep_alive_ms),
            handshake_timeout: pick(t.handshake_timeout_ms, dt.handshake_timeout_ms),
            connect_timeout: pick(t.connect_timeout_ms, dt.connect_timeout_ms),
            request_timeout: pick(t.request_timeout_ms, dt.request_timeout_ms),
            max_connections: t.max_connections.unwrap_or(base.max_connections),
            mtu_upper_bound: t.mtu_upper_bound,
            congestion: t.congestion.unwrap_or(base.congestion),
            max_handshakes_per_addr: l.max_handshakes_per_addr.unwrap_or(base.max_handshakes_per_addr),
            max_connections_per_addr: l.max_connections_per_addr.unwrap_or(base.max_connections_per_addr),
            ..base
        };
        o.transport.validate()?;
        let (i, base) = (&self.inventory, InventoryConfig::default());
        o.inventory = InventoryConfig {
            map_size: i.map_size_mib.map_or(base.map_size, |m| m.saturating_mul(MIB)),
            map_growth: i.map_growth_mib.map_or(base.map_growth, |m| m.saturating_mul(MIB)),
            max_map_size: i.max_map_size_mib.map_or(base.max_map_size, |m| m.saturating_mul(MIB)),
            plan_history_limit: i.plan_history_limit.unwrap_or(base.plan_history_limit),
        };
        o.inventory.validate()?;
        let base = DataConfig::default();
        let batch_kib = self.data.batch_kib.unwrap_or(base.batch_bytes / 1024);
        if !(1..=8192).contains(&batch_kib) {
            bail!("invalid data.batch_kib {batch_kib}: must be between 1 and 8192");
        }
        o.data = DataConfig {
            batch_bytes: batch_kib * 1024,
            catch_up_limit: self.data.catch_up_limit_kib.filter(|k| *k > 0).map(|k| k.saturating_mul(1024)),
            max_pulls_per_peer: l.max_pulls_per_peer.unwrap_or(base.max_pulls_per_peer),
            max_pulls: l.max_pulls.unwrap_or(base.max_pulls),
            pull_stall: l.pull_stall_secs.map_or(base.pull_stall, Duration::from_secs),
            max_reads_per_peer: l.max_reads_per_peer.unwrap_or(base.max_reads_per_peer),
            ..base
        };
        let data = &o.data;
        if data.max_pulls_per_peer == 0 || data.max_pulls < data.max_pulls_per_peer {
            bail!(
                "invalid limits.max_pulls_per_peer / max_pulls: at least 1, and max_pulls at least max_pulls_per_peer"
            );
        }
        if data.pull_stall.is_zero() {
            bail!("invalid limits.pull_stall_secs 0: must be at least 1");
        }
        if data.max_reads_per_peer == 0 || data.max_reads < data.max_reads_per_peer {
            bail!("invalid limits.max_reads_per_peer: between 1 and {}", data.max_reads);
        }
        let lost_after = self.placement.lost_after_secs.unwrap_or(DEFAULT_LOST_AFTER.as_secs());
        if lost_after == 0 {
            bail!("invalid placement.lost_after_secs 0: must be at least 1");
        }
        o.lost_after = Duration::from_secs(lost_after);
        o.auto_repair = self.placement.auto_repair.unwrap_or(true);
        o.auto_rebalance = self.placement.auto_rebalance.unwrap_or(true);
        Ok(o)
    }
}
