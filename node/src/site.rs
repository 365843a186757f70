//! A running site: its inventory, its endpoint and its gossip, started and stopped
//! together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::summary::{Label, SiteSummary};
use cairn_gossip::{ClusterView, Gossip, GossipConfig, QuicCarriage};
use cairn_inventory::{Inventory, InventoryConfig, Role, now_ms};
use cairn_transport::{Endpoint, TransportConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::credentials::ServingCertificate;
use crate::data::DataConfig;
use crate::data::replicator::DataShared;
use crate::data::retention::{RetentionConfig, RetentionCounters};
use crate::executor::StepNotes;
use crate::http::{Gateway, HttpServer};
use crate::metrics::{MetricsServer, Sources};
use crate::service::SiteService;
use crate::snapshot::read_snapshot;
use crate::supervisor::{RestartPolicy, Supervisor};

/// What a site needs to start.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// The site's data dir: its inventory, and under `tls/` the credentials the operator
    /// issued it (see [`crate::credentials`]).
    pub data_dir: PathBuf,
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// Core or replicant.
    pub role: Role,
    /// For a replicant: the dbs it keeps a read-only copy of.
    pub follow: Vec<cairn_inventory::DbName>,
    /// Failure-domain label.
    pub zone: Option<Label>,
    /// Placement weight (100 = the usual).
    pub capacity: u32,
    /// Inventory settings.
    pub inventory: InventoryConfig,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Gossip settings (seeds included).
    pub gossip: GossipConfig,
    /// Shard data settings (pull batches, catch-up throughput cap).
    pub data: DataConfig,
    /// Whether the site executes its plans and plans for the cluster. Off, it still
    /// accepts, stores and reports plans (maintenance, or tests of plan delivery).
    pub run_plans: bool,
    /// How long a site must be dead before automation recovers its shards elsewhere.
    pub lost_after: Duration,
    /// Whether automation recovers and trims shards on its own (when `run_plans`).
    pub auto_repair: bool,
    /// Whether automation rebalances (and empties draining sites) on its own.
    pub auto_rebalance: bool,
    /// Where to serve Prometheus metrics over HTTP (`/metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the HTTP/JSON API (HTTPS), if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// How retention clean-up runs.
    pub retention: RetentionConfig,
    /// How the site's tasks are restarted when they panic.
    pub restarts: RestartPolicy,
}

impl SiteOptions {
    /// Options with defaults for everything but where the site lives and listens.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            role: Role::Core,
            follow: Vec::new(),
            zone: None,
            capacity: 100,
            inventory: InventoryConfig::default(),
            transport: TransportConfig::default(),
            gossip: GossipConfig::default(),
            data: DataConfig::default(),
            run_plans: true,
            lost_after: DEFAULT_LOST_AFTER,
            auto_repair: true,
            auto_rebalance: true,
            metrics_listen: None,
            http_listen: None,
            retention: RetentionConfig::default(),
            restarts: RestartPolicy::default(),
        }
    }
}

/// Why a site could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The site's credentials are missing, unreadable, or not this site's.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// The inventory could not be opened.
    #[error(transparent)]
    Inventory(#[from] cairn_inventory::InventoryError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Transport(cairn_transport::TransportError),
    /// Gossip could not start.
    #[error(transparent)]
    Gossip(#[from] cairn_gossip::GossipError),
    /// A site asked to run as a replicant holds replicas that count toward placement.
    #[error(
        "this site holds {replicas} replicas; a replicant holds none — decommission it \
         (cairn ctl plan apply decommission SITE) before starting it as a replicant"
    )]
    ReplicantHoldsReplicas {
        /// How many.
        replicas: usize,
    },
    /// The HTTP API's address could not be bound.
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A started site. Call [`Site::shutdown`] to stop it cleanly.
#[derive(Debug)]
pub struct Site {
    /// The site's inventory.
    pub inventory: Arc<Inventory>,
    /// The site's endpoint.
    pub endpoint: Endpoint,
    /// The site's gossip.
    pub gossip: Arc<Gossip>,
    /// The data path's shared state (log growth signals, counters, progress).
    pub data: Arc<DataShared>,
    /// Where metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the HTTP API is served, if it is.
    pub http_addr: Option<SocketAddr>,
    /// The site's tasks (restarts, and why the site must stop if one keeps failing).
    pub supervisor: Arc<Supervisor>,
    /// What retention has removed.
    pub retention: Arc<RetentionCounters>,
    summary: SiteSummary,
    service: Arc<SiteService>,
    publisher: JoinHandle<()>,
    /// The executor, automation, replicator, retention and metrics loops.
    workers: Vec<JoinHandle<()>>,
    certificate: Arc<ServingCertificate>,
}

/// How long a site stays dead before its shards are recovered elsewhere, by default.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(600);

impl Site {
    /// Opens the inventory (for the cluster the credentials name), starts serving and
    /// gossiping. Must be called inside a tokio runtime.
    pub async fn start(options: SiteOptions) -> Result<Self, StartError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| {
            StartError::Inventory(cairn_inventory::InventoryError::Io {
                path: options.data_dir.clone(),
                source,
            })
        })?;
        let credentials = crate::credentials::load_site(&options.data_dir, options.role)?;
        let inventory =
            Arc::new(Inventory::open(&options.data_dir, credentials.cluster_id(), options.inventory)?);
        let site_id = inventory.identity().site_id;
        crate::credentials::check_site(&credentials, &options.data_dir, options.role, site_id)?;
        let certificate =
            Arc::new(ServingCertificate::new(&options.data_dir, options.role, site_id, &credentials)?);
        if options.role == Role::Replicant {
            let replicas = inventory
                .replicas(None)?
                .iter()
                .filter(|r| !matches!(r.state, cairn_inventory::ReplicaState::Following { .. }))
                .count();
            if replicas > 0 {
                return Err(StartError::ReplicantHoldsReplicas { replicas });
            }
        }
        let supervisor = Supervisor::new(options.restarts);
        let data = Arc::new(DataShared::new(options.data));
        let retention = Arc::new(RetentionCounters::default());
        let service = Arc::new(SiteService::new(
            inventory.clone(),
            options.role,
            data.clone(),
            &supervisor,
            retention.clone(),
            options.gossip.limits,
            certificate.clone(),
        ));
        let (endpoint, inbox) =
            Endpoint::serve(options.listen, &credentials, options.transport, service.clone())
                .map_err(StartError::Transport)?;
        // Peers revoked before this start are refused from the first handshake.
        if let Some(list) = inventory.revocations()? {
            endpoint.revoke(cairn_transport::RevokedSet::new(&list));
        }
        let identity = inventory.identity();
        let addr = endpoint.local_addr();
        let summary = SiteSummary {
            drain: None,
            role: options.role,
            addr: Label::truncated(&addr.to_string()),
            version: Label::truncated(env!("CARGO_PKG_VERSION")),
            started_ms: now_ms(),
            zone: options.zone,
            capacity: options.capacity,
            leaving: false,
            draining: false,
            certificate_expires_ms: certificate.expires_ms(),
        };
        let snapshot = read_snapshot(&inventory, &summary, |_, _, _| None, |_, _| "running".into())?;
        let metrics = match options.metrics_listen {
            Some(addr) => {
                Some(MetricsServer::bind(addr).await.map_err(|source| StartError::Metrics { addr, source })?)
            }
            None => None,
        };
        let http = match options.http_listen {
            Some(addr) => {
                Some(HttpServer::bind(addr).await.map_err(|source| StartError::Http { addr, source })?)
            }
            None => None,
        };
        let carriage = QuicCarriage::new(endpoint.clone(), inbox);
        let interval = options.gossip.interval;
        let gossip = Arc::new(
            Gossip::start(
                identity.site_id,
                identity.cluster_id,
                addr,
                &carriage,
                options.gossip,
                &snapshot,
                certificate.signing_keys(),
                certificate.trust().clone(),
            )
            .await?,
        );
        service.attach_view(gossip.subscribe());
        let notes = Arc::new(StepNotes::default());
        let publisher = {
            let publisher = Publisher {
                inventory: inventory.clone(),
                gossip: gossip.clone(),
                endpoint: endpoint.clone(),
                summary: summary.clone(),
                data: data.clone(),
                notes: notes.clone(),
                certificate: certificate.clone(),
            };
            supervisor.spawn("publisher", move || publish_loop(publisher.clone(), interval))
        };
        // Shard data flows whatever `run_plans` says: replicas keep following each other.
        let mut workers = Vec::new();
        {
            let (data, inv, endpoint, view) =
                (data.clone(), inventory.clone(), endpoint.clone(), gossip.subscribe());
            workers.push(supervisor.spawn("replicator", move || {
                crate::data::replicator::run(data.clone(), inv.clone(), endpoint.clone(), view.clone())
            }));
        }
        {
            let (inv, config, counters) = (inventory.clone(), options.retention, retention.clone());
            workers.push(supervisor.spawn("retention", move || {
                crate::data::retention::run(inv.clone(), config, counters.clone())
            }));
        }
        workers.push(supervisor.spawn("gossip_view", {
            let (gossip, supervisor) = (gossip.clone(), supervisor.clone());
            move || watch_view_health(gossip.clone(), supervisor.clone())
        }));
        let metrics_addr = metrics.as_ref().and_then(|m| m.local_addr().ok());
        if let Some(server) = metrics {
            let sources = Sources {
                inventory: inventory.clone(),
                view: gossip.subscribe(),
                data: data.clone(),
                gossip: carriage.counters(),
                steps: notes.clone(),
                requests: service.requests(),
                supervisor: supervisor.clone(),
                gossip_view_panics: gossip.clone(),
                endpoint: endpoint.clone(),
                retention: retention.clone(),
                certificate: certificate.clone(),
            };
            let server = Arc::new(server);
            workers.push(supervisor.spawn("metrics", move || server.clone().serve(sources.clone())));
            tracing::info!(addr = ?metrics_addr, "serving metrics at /metrics");
        }
        let http_addr = http.as_ref().and_then(|h| h.local_addr().ok());
        if let Some(server) = http {
            // Data requests go out through the site's own endpoint, to the holders.
            let client = cairn_client::Client::with_endpoint(
                endpoint.clone(),
                cairn_client::ClientConfig::new([addr]),
            );
            let gateway = Arc::new(Gateway {
                client,
                view: gossip.subscribe(),
                certificate: certificate.clone(),
                endpoint: endpoint.clone(),
            });
            let server = Arc::new(server);
            workers.push(supervisor.spawn("http", move || server.clone().serve(gateway.clone())));
            tracing::info!(addr = ?http_addr, "serving the HTTP API");
        }
        if options.run_plans {
            let (inv, view, wake, follow) = (
                inventory.clone(),
                gossip.subscribe(),
                data.wake.clone(),
                Arc::<[_]>::from(options.follow.clone()),
            );
            workers.push(supervisor.spawn("executor", move || {
                crate::executor::run(
                    inv.clone(),
                    view.clone(),
                    interval,
                    wake.clone(),
                    notes.clone(),
                    follow.clone(),
                )
            }));
            let (inv, endpoint, view) = (inventory.clone(), endpoint.clone(), gossip.subscribe());
            let config = crate::automation::AutomationConfig {
                every: interval,
                lost_after: options.lost_after,
                repair: options.auto_repair,
                rebalance: options.auto_rebalance,
            };
            let me = identity.site_id;
            workers.push(supervisor.spawn("automation", move || {
                crate::automation::run(me, inv.clone(), endpoint.clone(), view.clone(), config)
            }));
        }
        // Only now: the endpoint holds the service, so a start failing above must not
        // leave the service holding the endpoint (it would never be dropped).
        service.attach_endpoint(endpoint.clone());
        tracing::info!(
            site = %identity.site_id, cluster = %identity.cluster_id, %addr, role = %options.role,
            async_workers = tokio::runtime::Handle::current().metrics().num_workers(), "site started"
        );
        Ok(Self {
            inventory,
            endpoint,
            gossip,
            data,
            metrics_addr,
            http_addr,
            supervisor,
            retention,
            summary,
            service,
            publisher,
            workers,
            certificate,
        })
    }

    /// Loads the site's certificate and key again from its data dir (renewed by the
    /// operator) and serves new connections with them, as SIGHUP does.
    pub fn reload_credentials(
        &self,
    ) -> Result<cairn_transport::Credentials, crate::credentials::CredentialsError> {
        self.certificate.reload(&self.endpoint)
    }

    /// The certificate the site serves with.
    pub fn certificate(&self) -> &ServingCertificate {
        &self.certificate
    }

    /// The view as this site holds it now.
    pub fn view(&self) -> Arc<ClusterView> {
        self.gossip.view()
    }

    /// A receiver that wakes on every view change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.gossip.subscribe()
    }

    /// Set when a task has failed too often for the site to go on: why. The caller
    /// should stop the site and exit non-zero.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.supervisor.fatal()
    }

    /// Stops cleanly: tells peers the site is leaving (so it shows as `left`), stops
    /// gossip, closes the endpoint and waits for its tasks.
    pub async fn shutdown(self) {
        for worker in self.workers {
            worker.abort();
            let _ = worker.await;
        }
        self.publisher.abort();
        // Wait for the aborted publisher to drop its handle on gossip.
        let _ = self.publisher.await;
        let inventory = self.inventory.clone();
        let summary = self.summary.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            read_snapshot(&inventory, &summary, |_, _, _| None, |_, _| "running".into())
        })
        .await;
        if let Ok(Ok(snapshot)) = snapshot {
            self.gossip.announce_leaving(&snapshot).await;
        }
        match Arc::try_unwrap(self.gossip) {
            Ok(gossip) => gossip.shutdown().await,
            Err(_) => tracing::warn!("gossip is still shared at shutdown; it stops with the process"),
        }
        self.service.detach_endpoint();
        self.endpoint.close().await;
        tracing::info!(site = %self.inventory.identity().site_id, "site stopped");
    }
}

/// Watches the gossip view's rebuilds (they run inside the gossip crate, which catches a
/// panic per round and keeps the last good view): a view that fails to build round after
/// round stops the site.
async fn watch_view_health(gossip: Arc<Gossip>, supervisor: Arc<Supervisor>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let failing = gossip.view_failures_in_a_row();
        if failing >= VIEW_FAILURES_TO_STOP {
            supervisor.fail(format!(
                "task gossip_view failed {failing} rounds in a row: the cluster view cannot be built"
            ));
            return;
        }
    }
}

/// Rounds in a row whose view build panics before the site stops.
const VIEW_FAILURES_TO_STOP: u64 = 20;

/// Publishes the site's summary every gossip round (only what changed goes out).
/// What the publisher works with.
#[derive(Clone)]
struct Publisher {
    inventory: Arc<Inventory>,
    gossip: Arc<Gossip>,
    endpoint: Endpoint,
    summary: SiteSummary,
    data: Arc<DataShared>,
    notes: Arc<StepNotes>,
    certificate: Arc<ServingCertificate>,
}

/// The longest the publisher goes without reading the inventory again, when nothing was
/// committed to it: what the summary shows besides the inventory (catch-up progress, a
/// step's status, the certificate's expiry) is at most this old in gossip.
const PUBLISH_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Every round: takes a newer revocation list the view holds (stored, so it is kept and
/// gossiped on; handed to the endpoint, which cuts revoked peers off), then publishes
/// the site's summary — read again only when the inventory committed something since
/// the last read, or [`PUBLISH_AT_LEAST_EVERY`] passed.
async fn publish_loop(p: Publisher, every: Duration) {
    let Publisher { inventory, gossip, endpoint, summary, data, notes, certificate } = p;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut revoked_at = 0;
    let mut last_read: Option<(u64, tokio::time::Instant)> = None;
    loop {
        ticker.tick().await;
        if let Some(list) = gossip.view().revocations.clone().filter(|l| l.issued_ms > revoked_at) {
            revoked_at = list.issued_ms;
            endpoint.revoke(cairn_transport::RevokedSet::new(&list));
            let inv = inventory.clone();
            match crate::supervisor::blocking(move || inv.put_revocations(&list)).await {
                Ok(true) => tracing::warn!(issued_ms = revoked_at, "revocation list taken from gossip"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot store the revocation list"),
            }
        }
        // Counted before the read: a commit racing with it makes the next round read again.
        let commits = inventory.commits();
        if last_read.is_some_and(|(seen, at)| seen == commits && at.elapsed() < PUBLISH_AT_LEAST_EVERY) {
            continue;
        }
        last_read = Some((commits, tokio::time::Instant::now()));
        let site = SiteSummary { certificate_expires_ms: certificate.expires_ms(), ..summary.clone() };
        let (inv, data, notes) = (inventory.clone(), data.clone(), notes.clone());
        let progress = move |db: &_, shard, held| data.progress(db, shard, held);
        let status = move |db: &_, plan| notes.status(db, plan);
        match crate::supervisor::blocking(move || read_snapshot(&inv, &site, progress, status)).await {
            Ok(snapshot) => {
                gossip.publish(&snapshot).await;
            }
            Err(error) => tracing::warn!(%error, "cannot read the inventory to publish it"),
        }
    }
}
