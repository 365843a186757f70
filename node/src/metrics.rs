//! Prometheus metrics: what a site exposes on `--metrics-listen HOST:PORT` at
//! `/metrics` (OpenMetrics text, encoded by `prometheus-client`, served by `hyper`).
//!
//! Values are read when scraped, from the same places `dump` and `ctl status` read:
//! the site's cluster view (sites, shards short of their factor, lost shards, catch-up
//! rates), its inventory (replicas by state, pending plans, store size), and the live
//! counters of its pull streams, gossip carriage, executor and request handler. Nothing
//! is sampled in the background, so an idle site pays nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_gossip::{ClusterView, Gossip, GossipCounters, SiteState};
use cairn_inventory::{Inventory, InventoryError, ReplicaState};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::data::replicator::DataShared;
use crate::data::retention::RetentionCounters;
use crate::executor::StepNotes;
use crate::service::RequestCounters;
use crate::supervisor::Supervisor;

type Labels = Vec<(&'static str, String)>;

/// Where a site's metrics come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The site's inventory.
    pub inventory: Arc<Inventory>,
    /// Its cluster view.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// Its shard-data state (pull stream counters).
    pub data: Arc<DataShared>,
    /// Its gossip carriage's counters.
    pub gossip: Arc<GossipCounters>,
    /// Its executor's notes (steps done).
    pub steps: Arc<StepNotes>,
    /// Its request handler's counters.
    pub requests: Arc<RequestCounters>,
    /// Its task supervisor (restarts by task).
    pub supervisor: Arc<Supervisor>,
    /// Its gossip (view builds that panicked, what it publishes).
    pub gossip_view_panics: Arc<Gossip>,
    /// Its QUIC endpoint (datagrams and bytes on the wire).
    pub endpoint: cairn_transport::Endpoint,
    /// What retention removed.
    pub retention: Arc<RetentionCounters>,
    /// The certificate the site serves with (its expiry).
    pub certificate: Arc<crate::credentials::ServingCertificate>,
}

/// The metric families, registered once; [`Metrics::render`] fills them from the sources.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sites: Family<Labels, Gauge>,
    replicas: Family<Labels, Gauge>,
    under_replicated: Gauge,
    lost: Gauge,
    plans_running: Gauge,
    steps_done: Counter,
    pulled: Family<Labels, Counter>,
    catch_up_rate: Gauge,
    gossip: Family<Labels, Counter>,
    gossip_published: Family<Labels, Gauge>,
    udp: Family<Labels, Counter>,
    connections: Gauge,
    connection_events: Family<Labels, Counter>,
    gossip_dropped: Counter,
    requests: Family<Labels, Counter>,
    inventory_bytes: Gauge,
    task_restarts: Family<Labels, Counter>,
    retention_removed: Family<Labels, Counter>,
    certificate_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let m = Self {
            sites: Family::default(),
            replicas: Family::default(),
            under_replicated: Gauge::default(),
            lost: Gauge::default(),
            plans_running: Gauge::default(),
            steps_done: Counter::default(),
            pulled: Family::default(),
            catch_up_rate: Gauge::default(),
            gossip: Family::default(),
            gossip_published: Family::default(),
            udp: Family::default(),
            connections: Gauge::default(),
            connection_events: Family::default(),
            gossip_dropped: Counter::default(),
            requests: Family::default(),
            inventory_bytes: Gauge::default(),
            task_restarts: Family::default(),
            retention_removed: Family::default(),
            certificate_expiry: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("sites", "Sites in this site's view, by state (live, dead, left)", m.sites.clone());
        registry.register(
            "replicas",
            "This site's replicas, by state (catching_up, ready, handing_over)",
            m.replicas.clone(),
        );
        registry.register(
            "under_replicated_shards",
            "Shards (all dbs) with fewer ready replicas on live sites than their factor",
            m.under_replicated.clone(),
        );
        registry.register(
            "lost_shards",
            "Shards (all dbs) with no complete replica on a live site",
            m.lost.clone(),
        );
        registry.register("plans_running", "Plans pending on this site", m.plans_running.clone());
        registry.register("plan_steps_done", "Plan steps this site completed", m.steps_done.clone());
        registry.register(
            "pulled",
            "What this site's pull streams (catch-up and follow) received: entries, bytes, \
             duplicate entries, batches, refused batches, streams opened",
            m.pulled.clone(),
        );
        registry.register(
            "catch_up_rate_bytes_per_second",
            "Catch-up rate of this site's catching-up replicas, summed (over the last 5 s)",
            m.catch_up_rate.clone(),
        );
        registry.register(
            "gossip",
            "Gossip messages and bytes this site sent and received",
            m.gossip.clone(),
        );
        registry.register(
            "gossip_published",
            "What this site gossips about itself: keys, bytes (keys and signed values)",
            m.gossip_published.clone(),
        );
        registry.register(
            "udp",
            "UDP datagrams and bytes through this site's QUIC endpoint (everything it sends and \
             receives: gossip, requests, pulls, acknowledgements, QUIC headers and encryption)",
            m.udp.clone(),
        );
        registry.register(
            "connections",
            "QUIC connections of this site's endpoint open now, both directions",
            m.connections.clone(),
        );
        registry.register(
            "connection_events",
            "Connection events of this site's endpoint: handshake_ok, handshake_refused (no, \
             untrusted, expired or revoked certificate, wrong ALPN, timeout), retry_sent \
             (address validation asked), refused (endpoint full), stalled (nothing came back \
             after a send: closed and dialled again)",
            m.connection_events.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossip messages dropped (inbox full, too many in flight, or the send failed); \
             gossip makes up for them in later rounds",
            m.gossip_dropped.clone(),
        );
        registry.register(
            "requests",
            "Requests this site answered, by kind and outcome (ok, not_here, rejected, forbidden, error, busy)",
            m.requests.clone(),
        );
        registry.register(
            "inventory_bytes",
            "Size of this site's inventory file (data.mdb)",
            m.inventory_bytes.clone(),
        );
        registry.register(
            "task_restarts",
            "Times a task of this site panicked and was started again, by task",
            m.task_restarts.clone(),
        );
        registry.register(
            "retention_removed",
            "What retention removed from this site's replicas: entries, bytes",
            m.retention_removed.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the certificate this site serves with stops being valid (negative once it has)",
            m.certificate_expiry.clone(),
        );
        Self { registry, ..m }
    }

    /// Reads every source and renders the OpenMetrics text. Blocking (LMDB reads).
    pub fn render(&self, sources: &Sources) -> Result<String, InventoryError> {
        let view = sources.view.borrow().clone();
        self.read_view(&view);
        self.read_inventory(&sources.inventory)?;
        let d = sources.data.counters();
        for (what, value) in [
            ("entries", d.entries),
            ("bytes", d.bytes),
            ("duplicates", d.duplicates),
            ("batches", d.batches),
            ("refused_batches", d.refused_batches),
            ("streams", d.streams_opened),
        ] {
            set(&self.pulled.get_or_create(&vec![("what", what.to_owned())]), value);
        }
        let g = &sources.gossip;
        for (direction, messages, bytes) in
            [("sent", &g.messages_sent, &g.bytes_sent), ("received", &g.messages_received, &g.bytes_received)]
        {
            let labels = |what: &str| vec![("direction", direction.to_owned()), ("what", what.to_owned())];
            set(&self.gossip.get_or_create(&labels("messages")), messages.load(Ordering::Relaxed));
            set(&self.gossip.get_or_create(&labels("bytes")), bytes.load(Ordering::Relaxed));
        }
        let (keys, bytes) = sources.gossip_view_panics.published_size();
        for (what, n) in [("keys", keys), ("bytes", bytes)] {
            self.gossip_published.get_or_create(&vec![("what", what.to_owned())]).set(n as i64);
        }
        let wire = sources.endpoint.stats();
        for (direction, what, n) in [
            ("sent", "datagrams", wire.datagrams_sent),
            ("sent", "bytes", wire.bytes_sent),
            ("received", "datagrams", wire.datagrams_received),
            ("received", "bytes", wire.bytes_received),
        ] {
            let labels = vec![("direction", direction.to_owned()), ("what", what.to_owned())];
            set(&self.udp.get_or_create(&labels), n);
        }
        self.connections.set(i64::try_from(sources.endpoint.open_connections()).unwrap_or(i64::MAX));
        for (event, n) in [
            ("handshake_ok", wire.handshakes_ok),
            ("handshake_refused", wire.handshakes_refused),
            ("retry_sent", wire.retries_sent),
            ("refused", wire.connections_refused),
            ("stalled", wire.connections_stalled),
        ] {
            set(&self.connection_events.get_or_create(&vec![("event", event.to_owned())]), n);
        }
        set(&self.gossip_dropped, wire.gossip_dropped);
        set(&self.steps_done, sources.steps.steps_done());
        for ((kind, outcome), n) in sources.requests.snapshot() {
            let labels = vec![("kind", kind.to_owned()), ("outcome", outcome.to_owned())];
            set(&self.requests.get_or_create(&labels), n);
        }
        let mut restarts = sources.supervisor.restarts();
        restarts.push(("gossip_view", sources.gossip_view_panics.view_panics()));
        for (task, n) in restarts {
            set(&self.task_restarts.get_or_create(&vec![("task", task.to_owned())]), n);
        }
        let r = sources.retention.totals();
        for (what, n) in [("entries", r.entries), ("bytes", r.bytes)] {
            set(&self.retention_removed.get_or_create(&vec![("what", what.to_owned())]), n);
        }
        let left_ms = i128::from(sources.certificate.expires_ms()) - i128::from(cairn_inventory::now_ms());
        self.certificate_expiry.set(i64::try_from(left_ms / 1000).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        Ok(text)
    }

    fn read_view(&self, view: &ClusterView) {
        for (state, name) in [(SiteState::Live, "live"), (SiteState::Dead, "dead"), (SiteState::Left, "left")]
        {
            let n = view.sites.iter().filter(|s| s.state == state).count();
            self.sites.get_or_create(&vec![("state", name.to_owned())]).set(n as i64);
        }
        let count = |kind: &str| -> i64 {
            view.warnings
                .iter()
                .map(|w| match (w, kind) {
                    (cairn_gossip::view::Warning::UnderReplicated { shards, .. }, "under") => shards.len(),
                    (cairn_gossip::view::Warning::LostShards { shards, .. }, "lost") => shards.len(),
                    _ => 0,
                })
                .sum::<usize>() as i64
        };
        self.under_replicated.set(count("under"));
        self.lost.set(count("lost"));
        let rate: u64 = view
            .dbs
            .iter()
            .flat_map(|d| d.placement.iter().flat_map(|s| s.replicas.iter()))
            .filter(|r| r.site_id == view.site)
            .filter_map(|r| r.progress.map(|p| p.rate_bytes_per_s))
            .sum();
        self.catch_up_rate.set(rate as i64);
    }

    fn read_inventory(&self, inv: &Inventory) -> Result<(), InventoryError> {
        let mut by_state = [("catching_up", 0i64), ("ready", 0), ("handing_over", 0), ("following", 0)];
        for r in inv.replicas(None)? {
            let i = match r.state {
                ReplicaState::CatchingUp { .. } => 0,
                ReplicaState::Ready => 1,
                ReplicaState::HandingOver { .. } => 2,
                ReplicaState::Following { .. } => 3,
            };
            by_state[i].1 += 1;
        }
        for (name, n) in by_state {
            self.replicas.get_or_create(&vec![("state", name.to_owned())]).set(n);
        }
        self.plans_running.set(inv.pending_plans()?.len() as i64);
        let size = std::fs::metadata(inv.dir().join("data.mdb")).map(|m| m.len()).unwrap_or(0);
        self.inventory_bytes.set(size as i64);
        Ok(())
    }
}

/// Sets a counter to a total kept elsewhere (counters only go up, and so do the totals).
fn set(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

/// The metrics endpoint, bound (so a taken port fails the start, not a later scrape).
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` until the task is dropped; anything else is 404 or 405.
    pub async fn serve(self: Arc<Self>, sources: Sources) {
        let metrics = Arc::new(Metrics::new());
        let sources = Arc::new(sources);
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, sources) = (metrics.clone(), sources.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (metrics, sources) = (metrics.clone(), sources.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(&request, metrics, sources).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
                {
                    tracing::debug!(%peer, %error, "metrics connection ended");
                }
            });
        }
    }
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
    sources: Arc<Sources>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found: metrics are at /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".into());
    }
    match tokio::task::spawn_blocking(move || metrics.render(&sources)).await {
        Ok(Ok(text)) => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
        Ok(Err(error)) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{error}\n")),
        Err(error) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{error}\n")),
    }
}
