//! What a site answers: the node's implementation of the transport's `Service`.
//!
//! Inventory calls are blocking LMDB transactions, so they run on tokio's blocking pool.
//! The data-plane requests (writes, fetches, routes) are in [`data`].

pub(crate) mod authorize;
mod data;
mod dbs;
mod subscribe;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use cairn_gossip::ClusterView;
use cairn_gossip::view::ViewLimits;
use cairn_inventory::{
    DbName, DbRecord, Hlc, Inventory, InventoryError, Message, Role, STORE_FORMAT, Topic, now_ms,
};
use cairn_transport::{
    Peer, PullFrame, PullRequest, PullSender, Request, Response, Service, SiteStatus, WireError,
    WireErrorKind,
};

use self::authorize::{Asked, authorize};

use crate::data::access;
use crate::data::appender::Appender;
use crate::data::replicator::DataShared;
use crate::data::retention::RetentionCounters;
use crate::supervisor::Supervisor;
use tokio::sync::watch;

/// The site's request handler.
#[derive(Debug)]
pub struct SiteService {
    inventory: Arc<Inventory>,
    data: Arc<DataShared>,
    appender: Appender,
    role: Role,
    started: Instant,
    /// The gossip view, once gossip runs (it starts after the endpoint it rides on).
    view: OnceLock<watch::Receiver<Arc<ClusterView>>>,
    /// The last HLC reading this site handed out.
    clock: Mutex<Hlc>,
    /// Requests answered, by kind and outcome (for metrics).
    requests: Arc<RequestCounters>,
    /// The site's endpoint, for a replicant's forwarded writes (set once it is bound;
    /// taken away at shutdown, since the endpoint holds this service).
    endpoint: Mutex<Option<cairn_transport::Endpoint>>,
    /// Forwarded writes so far: where the next one starts among the holders.
    forwarded: std::sync::atomic::AtomicUsize,
    /// What retention has removed (for `Status`).
    retention: Arc<RetentionCounters>,
    /// What the view takes in (creations beyond `max_dbs` are refused, as the view
    /// would ignore them; committed records may be at most `max_clock_drift_ms` ahead).
    limits: ViewLimits,
    /// The certificate the site serves with (its expiry, and reloading it).
    certificate: Arc<crate::credentials::ServingCertificate>,
    /// The (identity, request kind) pairs refused so far, each logged once.
    refusals_logged: Mutex<std::collections::BTreeSet<(String, &'static str)>>,
}

/// The most distinct refusals remembered for logging once; later ones are counted only.
const MAX_REFUSALS_LOGGED: usize = 1024;

impl SiteService {
    /// A handler over the site's inventory (inside a tokio runtime: it starts the
    /// site's appender task).
    pub fn new(
        inventory: Arc<Inventory>,
        role: Role,
        data: Arc<DataShared>,
        supervisor: &Arc<Supervisor>,
        retention: Arc<RetentionCounters>,
        limits: ViewLimits,
        certificate: Arc<crate::credentials::ServingCertificate>,
    ) -> Self {
        Self {
            certificate,
            retention,
            limits,
            appender: Appender::start(&inventory, supervisor),
            inventory,
            data,
            role,
            started: Instant::now(),
            view: OnceLock::new(),
            clock: Mutex::new(Hlc::default()),
            requests: Arc::default(),
            endpoint: Mutex::new(None),
            forwarded: Default::default(),
            refusals_logged: Mutex::default(),
        }
    }

    /// Loads the site's certificate again (`Request::ReloadCredentials`).
    fn reload_credentials(&self) -> Response {
        let endpoint = self.endpoint.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(endpoint) = endpoint else {
            return Response::Error(WireError::new(
                WireErrorKind::Busy,
                "the site is starting or stopping; try again",
            ));
        };
        match self.certificate.reload(&endpoint) {
            Ok(credentials) => Response::Reloaded {
                identity: credentials.identity().uri(),
                expires_ms: self.certificate.expires_ms(),
            },
            Err(error) => {
                tracing::warn!(%error, "certificate not reloaded; serving with the one loaded before");
                Response::Rejected {
                    reason: format!("certificate not reloaded (the old one stays): {error}"),
                }
            }
        }
    }

    /// Takes an operator's sealed order to drain (or stop draining) this site.
    async fn set_draining(&self, peer: SocketAddr, order: cairn_inventory::DrainOrder) -> Response {
        let me = self.inventory.identity().site_id;
        if order.site != me {
            return Response::Rejected {
                reason: format!(
                    "the drain order names site {}, not this site ({})",
                    order.site.short(),
                    me.short()
                ),
            };
        }
        if let Err(why) = self.certificate.trust().check_drain(&order, now_ms()) {
            return Response::Rejected { reason: format!("drain order: {why}") };
        }
        let on = order.on;
        match self.blocking(move |inv| inv.put_drain_order(&order)).await {
            Ok(()) => {
                tracing::info!(%peer, draining = on, "draining set");
                Response::Draining { on }
            }
            Err(error) => internal(&error),
        }
    }

    /// Takes an operator's revocation list: stored if newer, handed to the endpoint at
    /// once (revoked peers are cut off), and gossiped by the publisher.
    async fn revoke(&self, list: cairn_inventory::RevocationList) -> Response {
        let operator = match self.certificate.trust().check_revocations(&list, now_ms()) {
            Ok(operator) => operator,
            Err(why) => return Response::Rejected { reason: format!("revocation list: {why}") },
        };
        let stored = list.clone();
        let taken = match self.blocking(move |inv| inv.put_revocations(&stored)).await {
            Ok(taken) => taken,
            Err(error) => return internal(&error),
        };
        let current = match self.blocking(|inv| inv.revocations()).await {
            Ok(current) => current,
            Err(error) => return internal(&error),
        };
        if taken {
            tracing::warn!(%operator, entries = list.entries.len(), issued_ms = list.issued_ms, "revocation list taken");
            let endpoint = self.endpoint.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(endpoint) = endpoint {
                endpoint.revoke(cairn_transport::RevokedSet::new(&list));
            }
        }
        Response::RevocationsTaken { issued_ms: current.map_or(0, |c| c.issued_ms), taken }
    }

    /// Checks `asked` from `peer` against the access table (see [`authorize`]); a refusal
    /// is counted (`outcome="forbidden"`), logged once per identity and kind, and returned
    /// as the reason to answer with.
    fn authorized(&self, peer: &Peer, asked: Asked<'_>, kind: &'static str) -> Result<(), String> {
        let planner = match asked {
            Asked::Request(Request::Schedule(_)) => {
                self.current_view().and_then(|view| crate::automation::planner_of_record(&view))
            }
            _ => None,
        };
        let Err(why) = authorize(&peer.identity, asked, planner) else { return Ok(()) };
        self.requests.count_outcome(kind, "forbidden");
        let mut logged = self.refusals_logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() < MAX_REFUSALS_LOGGED && logged.insert((peer.identity.to_string(), kind)) {
            tracing::warn!(%peer, why, "request refused (forbidden); later ones of this kind only counted");
        }
        Err(why)
    }

    /// Gives the service the site's endpoint (a replicant forwards writes with it).
    pub fn attach_endpoint(&self, endpoint: cairn_transport::Endpoint) {
        *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = Some(endpoint);
    }

    /// Takes the endpoint back (at shutdown: it holds this service).
    pub fn detach_endpoint(&self) {
        self.endpoint.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// The requests this service has answered, by kind and outcome (shared, live).
    pub fn requests(&self) -> Arc<RequestCounters> {
        self.requests.clone()
    }

    /// Connects the gossip view (once).
    pub fn attach_view(&self, view: watch::Receiver<Arc<ClusterView>>) {
        let _ = self.view.set(view);
    }

    fn current_view(&self) -> Option<Arc<ClusterView>> {
        self.view.get().map(|v| v.borrow().clone())
    }

    fn status(&self) -> SiteStatus {
        let identity = self.inventory.identity();
        SiteStatus {
            site_id: identity.site_id,
            cluster_id: identity.cluster_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            store_format: STORE_FORMAT,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            role: self.role,
            data: self.data.counters(),
            retention: self.retention.totals(),
            certificate_expires_ms: self.certificate.expires_ms(),
        }
    }

    /// The next HLC reading: after our last one and after every creation, change and
    /// drop seen in the view.
    fn tick(&self) -> Hlc {
        let seen = self
            .current_view()
            .map(|v| {
                let dbs = v.dbs.iter().map(|d| d.created.max(d.changed));
                dbs.chain(v.dropped.iter().map(|d| d.at)).max().unwrap_or_default()
            })
            .unwrap_or_default();
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        *clock = (*clock).max(seen).tick(now_ms());
        *clock
    }

    /// Runs a blocking inventory call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inventory) -> Result<T, InventoryError> + Send + 'static,
    ) -> Result<T, InventoryError> {
        let inventory = self.inventory.clone();
        match tokio::task::spawn_blocking(move || f(&inventory)).await {
            Ok(result) => result,
            Err(join) => {
                Err(InventoryError::InvalidSetting { what: "inventory task", why: join.to_string() })
            }
        }
    }

    /// The db's settings as the cluster knows them: the view's, or this site's own
    /// record if newer (a change made here and not gossiped back yet) or not yet in the
    /// view (just created here); `None` when no such db is known.
    async fn known_db(&self, db: &DbName) -> Option<Result<DbRecord, InventoryError>> {
        let viewed = self.current_view().and_then(|v| v.db(db).map(|d| d.record()));
        let d = db.clone();
        let local = self.blocking(move |inv| inv.db(&d)).await;
        let local = match local {
            Ok(local) => local,
            Err(error) => return Some(Err(error)),
        };
        match (viewed, local) {
            (Some(v), Some(l)) if l.incarnation() == v.incarnation() && l.version() > v.version() => {
                Some(Ok(l))
            }
            (Some(v), _) => Some(Ok(v)),
            (None, local) => local.map(Ok),
        }
    }

    fn not_here(&self, db: &DbName, shard: u32, reason: String) -> Response {
        let me = self.inventory.identity().site_id;
        let holders =
            self.current_view().map(|v| access::ready_holders(&v, me, db, shard)).unwrap_or_default();
        Response::NotHere { reason, holders }
    }

    /// The older, topic-less write: messages of topic `""`, acknowledged locally.
    async fn publish(&self, db: DbName, shard: u32, messages: Vec<serde_bytes::ByteBuf>) -> Response {
        if let Err(reason) = access::check_publish(&messages) {
            return Response::Rejected { reason };
        }
        if self.role == Role::Replicant {
            let (d, request) = (db.clone(), Request::Publish { db, shard, messages });
            return self.forward(&d, shard, request).await;
        }
        let messages = messages.into_iter().map(|m| Message::new(Topic::default(), m.into_vec())).collect();
        match self.appender.append(db.clone(), shard, messages, None).await {
            Ok(Ok(stored)) => {
                self.data.signals.notify(&db, shard);
                Response::Published { ids: stored.into_iter().map(|s| s.id).collect() }
            }
            Ok(Err(state)) => self.not_here(&db, shard, access::not_writable(&db, shard, state.as_ref())),
            Err(error) => data::write_failed(&db, shard, &error),
        }
    }

    async fn read(&self, peer: SocketAddr, db: DbName, shard: u32, from: u64, max: u32) -> Response {
        let _ticket = match self.data.reads.try_take(peer, 1) {
            Ok(ticket) => ticket,
            Err(why) => {
                return Response::Error(WireError::new(
                    WireErrorKind::Busy,
                    format!("too many reads: {why}"),
                ));
            }
        };
        let (d, s) = (db.clone(), shard);
        let result = self
            .blocking(move |inv| match access::readable(inv, &d, s)? {
                Ok(()) => Ok(Ok(access::read_page(inv, &d, s, from, max)?)),
                Err(reason) => Ok(Err(reason)),
            })
            .await;
        match result {
            Ok(Ok(response)) => response,
            Ok(Err(reason)) => self.not_here(&db, shard, reason),
            Err(error) => internal(&error),
        }
    }
}

fn unknown_db(db: &DbName) -> Response {
    Response::Rejected { reason: format!("unknown db {db}: it is not in this site's cluster view") }
}

fn internal(error: &InventoryError) -> Response {
    tracing::error!(%error, "request failed in the inventory");
    Response::Error(WireError::new(WireErrorKind::Internal, error.to_string()))
}

/// Requests a site answered since it started, by kind and outcome.
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl RequestCounters {
    /// `((kind, outcome), count)` for every pair seen; outcome is `ok`, `not_here`,
    /// `rejected` (refused, e.g. bad input), `forbidden` (not allowed for the peer's
    /// identity) or `error`.
    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn count(&self, kind: &'static str, response: &Response) {
        let outcome = match response {
            Response::Error(_) => "error",
            Response::Rejected { .. } => "rejected",
            Response::NotHere { .. } => "not_here",
            _ => "ok",
        };
        self.count_outcome(kind, outcome);
    }

    fn count_outcome(&self, kind: &'static str, outcome: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry((kind, outcome)).or_default() += 1;
    }
}

impl Service for SiteService {
    async fn subscribe(
        &self,
        peer: Peer,
        request: cairn_transport::SubscribeRequest,
        mut out: cairn_transport::SubscriptionSender,
    ) {
        if let Err(reason) = self.authorized(&peer, Asked::Subscribe, "subscribe") {
            let _ = out
                .frames
                .send(&cairn_transport::SubscriptionFrame::Refused { reason, holders: Vec::new() })
                .await;
            out.frames.finish();
            return;
        }
        self.requests.count_outcome("subscribe", "ok");
        self.serve_subscription(peer.addr, request, out).await;
    }

    async fn handle(&self, peer: Peer, request: Request) -> Response {
        let kind = request.kind();
        if let Err(why) = self.authorized(&peer, Asked::Request(&request), kind) {
            return Response::Error(WireError::new(WireErrorKind::Forbidden, why));
        }
        let response = self.answer(peer.addr, request).await;
        self.requests.count(kind, &response);
        response
    }

    async fn pull(&self, peer: Peer, request: PullRequest, mut out: PullSender) {
        if let Err(reason) = self.authorized(&peer, Asked::Pull(&request), "pull") {
            let _ = out.send(&PullFrame::Refused { reason }).await;
            out.finish();
            return;
        }
        let _ticket = match self.data.pulls.try_take(out.peer(), 1) {
            Ok(ticket) => ticket,
            Err(why) => {
                self.requests.count_outcome("pull", "busy");
                let reason = format!("too many pull streams: {why}; try again later");
                let _ = out.send(&PullFrame::Refused { reason }).await;
                out.finish();
                return;
            }
        };
        self.requests.count_outcome("pull", "ok");
        let serving = crate::data::upstream::Serving {
            inventory: self.inventory.clone(),
            signals: self.data.signals.clone(),
            config: self.data.config,
            budget: self.data.pull_budget.clone(),
            io: self.data.pull_io.clone(),
            acks: self.data.acks.clone(),
        };
        crate::data::upstream::serve(serving, request, out).await;
    }
}

impl SiteService {
    async fn answer(&self, peer: SocketAddr, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status()),
            Request::Schedule(_) if self.role == Role::Replicant => Response::Rejected {
                reason: format!(
                    "site {} is a replicant: it holds no replicas, so it runs no plans",
                    self.inventory.identity().site_id.short()
                ),
            },
            Request::Schedule(plan) => {
                let (db, plan_id, priority) = (plan.db.clone(), plan.plan_id, plan.priority);
                // Only plans for a db this site knows, within its shards: a plan may come
                // before the db's gossip, so an unknown db is "not yet", and the planner
                // delivers again.
                let shards = match self.known_db(&db).await {
                    Some(Ok(record)) => record.settings.shards,
                    Some(Err(error)) => return internal(&error),
                    None => {
                        let why = format!("db {db} is not known here yet; deliver the plan again later");
                        return Response::Error(WireError::new(WireErrorKind::Unavailable, why));
                    }
                };
                if let Err(rejection) = cairn_inventory::plan_machine::check_fits(&plan, shards) {
                    return Response::Rejected { reason: rejection.to_string() };
                }
                match self.blocking(move |inv| inv.offer(&plan)).await {
                    Ok(outcome) => {
                        tracing::info!(%peer, %db, plan = %plan_id.short(), priority, ?outcome, "plan offered");
                        Response::Scheduled(outcome)
                    }
                    Err(InventoryError::PlanRejected(reason)) => {
                        Response::Rejected { reason: reason.to_string() }
                    }
                    Err(error) => internal(&error),
                }
            }
            Request::Dump => match self.current_view() {
                Some(view) => match serde_json::to_string(&*view) {
                    Ok(json) => Response::Dump { json },
                    Err(e) => Response::Error(WireError::new(WireErrorKind::Internal, e.to_string())),
                },
                None => Response::Error(WireError::new(WireErrorKind::Busy, "gossip is starting; try again")),
            },
            Request::CreateDb { name, settings } => self.prepare_create(name, settings).await,
            Request::Publish { db, shard, messages } => self.publish(db, shard, messages).await,
            Request::Read { db, shard, from, max } => self.read(peer, db, shard, from, max).await,
            Request::Pull(_) => Response::Error(WireError::new(
                WireErrorKind::Undecodable,
                "a pull is a stream, not a request",
            )),
            Request::PlanPreview(request) => match self.current_view() {
                Some(view) => {
                    match crate::planner::operator::preview(
                        &view,
                        &request,
                        self.inventory.identity().site_id,
                    ) {
                        Ok(preview) => Response::PlanPreview(preview),
                        Err(reason) => Response::Rejected { reason },
                    }
                }
                None => Response::Error(WireError::new(WireErrorKind::Busy, "gossip is starting; try again")),
            },
            Request::CancelPlan { db } => {
                let d = db.clone();
                match self.blocking(move |inv| inv.cancel_plan(&d)).await {
                    Ok(plan) => {
                        tracing::info!(%peer, %db, plan = ?plan.map(|p| p.short()), "plan cancelled");
                        Response::Cancelled { plan }
                    }
                    Err(error) => internal(&error),
                }
            }
            Request::AlterDb { db, replication, retention } => {
                self.prepare_alter(db, replication, retention).await
            }
            Request::DropDb { db } => self.prepare_drop(db).await,
            Request::CommitDb { record } => self.commit(record).await,
            Request::Revoke { list } => self.revoke(list).await,
            Request::Write(write) => self.write(peer, write).await,
            Request::Fetch(fetch) => self.fetch(peer, fetch).await,
            Request::Routes { db } => self.routes(&db),
            Request::Subscribe(_) => Response::Error(WireError::new(
                WireErrorKind::Undecodable,
                "a subscription is a stream, not a request",
            )),
            Request::ReloadCredentials => self.reload_credentials(),
            Request::SetDraining { order } => self.set_draining(peer, order).await,
        }
    }
}
