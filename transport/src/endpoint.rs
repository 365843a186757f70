//! One QUIC endpoint per site: it serves requests and gossip, and makes requests.
//!
//! The endpoint listens on the site's one UDP address and dials out from the same
//! socket, so a peer's source address is its listening address (gossip relies on it).
//! Every connection is mutual TLS against the cluster CA (see [`crate::tls`]); a peer
//! without a valid certificate never gets a stream read.
//!
//! Streams: each bidirectional stream carries one request frame and one response frame.
//! Each unidirectional stream carries a kind byte and one frame; kind 1 is gossip.
//! Datagrams carry gossip too: kind 1 and a whole message, or kind 2 and one part of a
//! message a few datagrams long ([`crate::gossip_parts`], on `cairn/2` and `cairn/3`
//! connections). On `cairn/3` connections every gossip message, however carried, is
//! packed: an encoding byte, then the message raw or compressed
//! ([`crate::gossip_packing`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use cairn_types::codec;
use quinn::Runtime;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::frame::{self, FrameError};
use crate::gossip_packing;
use crate::gossip_parts::{self, Reassembly};
use crate::message::{Request, Response, WireError, WireErrorKind};
use crate::per_addr::{PerAddr, Slot};
use crate::pool::{Dial, Pool};
use crate::pull::{PullReceiver, PullRequest, PullSender};
use crate::stats::{Stats, StatsSnapshot};
use crate::subscribe::{
    Credit, FrameReceiver, FrameSender, SubscribeRequest, Subscription, SubscriptionFrame, SubscriptionSender,
};
use crate::tls::{Credentials, Identity, RevokedSet};
use crate::wire::{CountedSocket, WireCounters};

/// The kind byte of a gossip stream.
const STREAM_GOSSIP: u8 = 1;
/// Application close code for a site shutting down.
const CLOSE_LEAVING: u32 = 0;
/// Application close code for a connection over the per-address cap.
const CLOSE_TOO_MANY: u32 = 2;
/// Stream stop code for a request we refused to read further.
const STOP_BAD_REQUEST: u32 = 1;
/// The largest acknowledgement frame a pull receiver may send (a frontier of the most
/// origins fits).
const ACK_FRAME_BYTES: usize = 1 << 20;

/// Application close code for a peer whose certificate names no identity.
const CLOSE_NO_IDENTITY: u32 = 3;
/// Application close code for a peer whose certificate was revoked.
const CLOSE_REVOKED: u32 = 4;
/// Application close code for a connection on which nothing came back for a while.
const CLOSE_STALLED: u32 = 5;

/// Who is at the other end of a connection: its address and the identity its verified
/// certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Where its packets come from.
    pub addr: SocketAddr,
    /// Who its certificate was issued to.
    pub identity: Identity,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.identity.site_id() {
            Some(id) => write!(f, "{} {} at {}", self.identity.kind(), id.short(), self.addr),
            None => write!(f, "{} at {}", self.identity, self.addr),
        }
    }
}

/// The verified certificate (DER) of a connection's peer.
fn peer_certificate(conn: &quinn::Connection) -> Result<rustls::pki_types::CertificateDer<'static>, String> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or_else(|| "the peer presented no certificate".to_owned())?;
    certs.first().cloned().ok_or_else(|| "the peer presented no certificate".to_owned())
}

/// The identity in the verified certificate of a connection's peer.
fn peer_identity(conn: &quinn::Connection) -> Result<Identity, String> {
    Identity::of_certificate(&peer_certificate(conn)?).map_err(|e| e.to_string())
}

/// Why `conn`'s peer may not stay connected under `revoked`, if it may not. (With
/// nothing revoked, the peer's certificate chain is not copied out of quinn at all:
/// this runs for every gossip message sent.)
fn revoked_peer(conn: &quinn::Connection, revoked: &RevokedSet) -> Option<String> {
    if revoked.is_empty() {
        return None;
    }
    peer_certificate(conn).ok().and_then(|leaf| revoked.revokes(leaf.as_ref()))
}

/// What a site does with requests. Implemented by the node; the transport only carries.
pub trait Service: Send + Sync + 'static {
    /// Answers one request from `peer`.
    fn handle(&self, peer: Peer, request: Request) -> impl Future<Output = Response> + Send;

    /// Serves one pull stream (see [`crate::pull`]) for `peer` until it is done or the
    /// receiver goes away.
    fn pull(&self, peer: Peer, request: PullRequest, out: PullSender) -> impl Future<Output = ()> + Send;

    /// Serves one subscription (see [`crate::subscribe`]) until it ends or the reader
    /// goes away. By default, refuses it.
    fn subscribe(
        &self,
        peer: Peer,
        request: SubscribeRequest,
        out: SubscriptionSender,
    ) -> impl Future<Output = ()> + Send {
        let _ = (peer, request);
        async move {
            let mut out = out;
            let refused = SubscriptionFrame::Refused {
                reason: "this site serves no subscriptions".into(),
                holders: Vec::new(),
            };
            let _ = out.frames.send(&refused).await;
            out.frames.finish();
        }
    }
}

/// Gossip messages received, with the sender's address, in arrival order.
#[derive(Debug)]
pub struct GossipInbox(pub mpsc::Receiver<(SocketAddr, Vec<u8>)>);

struct Inner {
    quinn: quinn::Endpoint,
    /// How connections are dialled: our certificate and the CA (replaced by `reload`).
    client: std::sync::RwLock<quinn::ClientConfig>,
    config: TransportConfig,
    pool: Pool,
    stats: Stats,
    /// What went through the endpoint's UDP socket.
    wire: Arc<WireCounters>,
    gossip_slots: Arc<Semaphore>,
    /// Numbers gossip messages sent in parts (a receiver tells them apart by it).
    gossip_message_ids: AtomicU32,
    /// Permits are KiB of request frames being buffered.
    request_budget: Semaphore,
    handshakes: AtomicUsize,
    /// Handshakes and connections per source address.
    per_addr: Arc<PerAddr>,
    /// Every task the endpoint spawns, so `close` can wait for them (and for the
    /// service handles they hold) to be gone.
    tasks: TaskTracker,
    /// Serves the streams a peer opens on a connection we made (a site's endpoint
    /// only): connections are used both ways, so a peer can answer on ours.
    serve_outgoing: OnceLock<Box<dyn Fn(SocketAddr, quinn::Connection) + Send + Sync>>,
    /// What the cluster's newest revocation list revokes: refused at the handshake,
    /// and connections already open closed when it changes.
    revoked: watch::Sender<Arc<RevokedSet>>,
}

/// A site's (or the CLI's) QUIC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("addr", &self.inner.quinn.local_addr().ok()).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds a site's endpoint on `listen`, serving `service` and queuing gossip into the
    /// returned inbox. Must be called inside a tokio runtime.
    pub fn serve<S: Service>(
        listen: SocketAddr,
        credentials: &Credentials,
        config: TransportConfig,
        service: Arc<S>,
    ) -> Result<(Self, GossipInbox), TransportError> {
        config.validate()?;
        let server = server_config(credentials, &config)?;
        let bind_err = |source| TransportError::Bind { addr: listen, source };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        // Stateless-reset and connection-id keys derived from the site's private key, so
        // that after a restart the site recognises its previous incarnation's connection
        // ids and resets those connections at once (the peers then reconnect) instead of
        // leaving them to time out.
        let mut endpoint = quinn::EndpointConfig::new(Arc::new(credentials.reset_key()));
        let cid_key = credentials.connection_id_key();
        endpoint.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        config.configure_endpoint(&mut endpoint)?;
        let wire = Arc::new(WireCounters::default());
        let socket =
            Arc::new(CountedSocket::new(runtime.wrap_udp_socket(socket).map_err(bind_err)?, wire.clone()));
        let quinn = quinn::Endpoint::new_with_abstract_socket(endpoint, Some(server), socket, runtime)
            .map_err(bind_err)?;
        let client = client_config(credentials, &config)?;
        let (tx, rx) = mpsc::channel(config.gossip_inbox);
        let endpoint = Self::new(quinn, client, config, wire);
        let weak: Weak<Inner> = Arc::downgrade(&endpoint.inner);
        let (outgoing_service, outgoing_gossip) = (service.clone(), tx.clone());
        let _ = endpoint.inner.serve_outgoing.set(Box::new(move |peer, conn| {
            if let Some(inner) = weak.upgrade() {
                let task = serve_streams(
                    inner.clone(),
                    outgoing_service.clone(),
                    outgoing_gossip.clone(),
                    peer,
                    conn,
                );
                inner.tasks.spawn(task);
            }
        }));
        endpoint.inner.tasks.spawn(accept_loop(endpoint.inner.clone(), service, tx));
        Ok((endpoint, GossipInbox(rx)))
    }

    /// An endpoint that only makes requests (the CLI), on an ephemeral port of the
    /// address family of `peer_family`.
    pub fn client(
        credentials: &Credentials,
        config: TransportConfig,
        peer_family: SocketAddr,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let bind: SocketAddr =
            if peer_family.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        let bind_err = |source| TransportError::Bind { addr: bind, source };
        let socket = std::net::UdpSocket::bind(bind).map_err(bind_err)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let wire = Arc::new(WireCounters::default());
        let socket =
            Arc::new(CountedSocket::new(runtime.wrap_udp_socket(socket).map_err(bind_err)?, wire.clone()));
        let quinn =
            quinn::Endpoint::new_with_abstract_socket(config.quinn_endpoint()?, None, socket, runtime)
                .map_err(bind_err)?;
        let client = client_config(credentials, &config)?;
        Ok(Self::new(quinn, client, config, wire))
    }

    fn new(
        quinn: quinn::Endpoint,
        client: quinn::ClientConfig,
        config: TransportConfig,
        wire: Arc<WireCounters>,
    ) -> Self {
        let inner = Inner {
            client: std::sync::RwLock::new(client),
            gossip_slots: Arc::new(Semaphore::new(config.max_gossip_in_flight)),
            gossip_message_ids: Default::default(),
            request_budget: Semaphore::new(config.max_buffered_request_bytes.div_ceil(1024)),
            per_addr: PerAddr::new(config.max_handshakes_per_addr, config.max_connections_per_addr),
            quinn,
            config,
            pool: Pool::default(),
            stats: Stats::default(),
            wire,
            handshakes: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
            serve_outgoing: OnceLock::new(),
            revoked: watch::Sender::new(Arc::default()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Serves and dials with `credentials` from now on (a renewed certificate, without a
    /// restart): new connections present it; connections already open keep theirs until
    /// they close. The QUIC reset and connection-id keys stay those of the first
    /// credentials until the process restarts.
    pub fn reload(&self, credentials: &Credentials) -> Result<(), TransportError> {
        let config = &self.inner.config;
        if self.inner.serve_outgoing.get().is_some() {
            self.inner.quinn.set_server_config(Some(server_config(credentials, config)?));
        }
        let client = client_config(credentials, config)?;
        *self.inner.client.write().unwrap_or_else(std::sync::PoisonError::into_inner) = client;
        Ok(())
    }

    /// Refuses, from now on, peers whose certificate `revoked` names (if it is newer
    /// than what the endpoint holds), and closes the connections of those connected.
    /// Answers whether it was newer.
    pub fn revoke(&self, revoked: RevokedSet) -> bool {
        self.inner.revoked.send_if_modified(|current| {
            let newer = revoked.issued_ms() > current.issued_ms();
            if newer {
                *current = Arc::new(revoked);
            }
            newer
        })
    }

    /// What the newest revocation list this endpoint holds revokes.
    pub fn revoked(&self) -> Arc<RevokedSet> {
        self.inner.revoked.borrow().clone()
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.quinn.local_addr().expect("a bound endpoint has an address")
    }

    /// QUIC connections open now, in both directions (quinn's count: handshakes in
    /// progress and connections closing included).
    pub fn open_connections(&self) -> usize {
        self.inner.quinn.open_connections()
    }

    /// What the endpoint has done so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot_with(&self.inner.wire)
    }

    /// Sends `request` to the site at `peer` and waits for its answer, within the
    /// request deadline. An error response from the peer is [`TransportError::Remote`].
    pub async fn request(&self, peer: SocketAddr, request: &Request) -> Result<Response, TransportError> {
        let inner = &self.inner;
        let bytes = codec::encode(request)?;
        if bytes.len() > inner.config.max_frame_bytes {
            let source = FrameError::TooLarge { len: bytes.len(), max: inner.config.max_frame_bytes };
            return Err(TransportError::Frame { peer, source });
        }
        let deadline = inner.config.request_timeout;
        let exchange = async {
            // A pooled connection the peer reset (it restarted, and answered our packets
            // with a stateless reset) carried nothing to the new process: dial once more.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let conn = inner.connection(peer, Dial::Request).await?;
                let result = exchange_on(&conn, peer, &bytes, inner.config.max_frame_bytes).await;
                if result.is_err() && conn.close_reason().is_some() {
                    inner.pool.forget(peer, &conn);
                    if attempts == 1 && matches!(conn.close_reason(), Some(quinn::ConnectionError::Reset)) {
                        tracing::debug!(%peer, "connection reset by a restarted peer; dialling again");
                        continue;
                    }
                }
                return Ok::<_, TransportError>(codec::decode::<Response>(&result?)?);
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Err(_) => {
                // The next request dials afresh rather than waiting on a connection the
                // peer may have forgotten (a restart) until its idle timeout.
                inner.pool.forget_peer(peer);
                Err(TransportError::Timeout { peer, after: deadline })
            }
            Ok(Ok(Response::Error(error))) => Err(TransportError::Remote { peer, error }),
            Ok(result) => result,
        }
    }

    /// Opens a subscription at the site at `peer` (see [`crate::subscribe`]).
    pub async fn subscribe(
        &self,
        peer: SocketAddr,
        request: &SubscribeRequest,
    ) -> Result<Subscription, TransportError> {
        let (send, recv) = self.open_stream(peer, &Request::Subscribe(request.clone())).await?;
        Ok(Subscription {
            frames: FrameReceiver {
                peer,
                recv,
                max_frame: self.inner.config.max_frame_bytes,
                _frames: std::marker::PhantomData,
            },
            credits: FrameSender { peer, send, _frames: std::marker::PhantomData },
        })
    }

    /// Opens a pull stream to the site at `peer` (see [`crate::pull`]). The frames come
    /// from the returned receiver; the stream lives as long as the upstream keeps it.
    pub async fn pull(
        &self,
        peer: SocketAddr,
        request: &PullRequest,
    ) -> Result<PullReceiver, TransportError> {
        let (send, recv) = self.open_stream(peer, &Request::Pull(request.clone())).await?;
        // The send side stays open for the receiver's acknowledgements.
        let acks = Some(crate::pull::PullAckSender { peer, send, _frames: std::marker::PhantomData });
        let frames = FrameReceiver {
            peer,
            recv,
            max_frame: self.inner.config.max_frame_bytes,
            _frames: std::marker::PhantomData,
        };
        Ok(PullReceiver { frames, acks })
    }

    /// Opens a stream to `peer` and sends `request` as its first frame, within the
    /// request timeout; both sides of the stream stay open for the caller. A connection
    /// found lost is dropped from the pool.
    async fn open_stream(
        &self,
        peer: SocketAddr,
        request: &Request,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TransportError> {
        let inner = &self.inner;
        let bytes = codec::encode(request)?;
        let open = async {
            let conn = inner.connection(peer, Dial::Request).await?;
            let result = async {
                let (mut send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| TransportError::ConnectionLost { peer, reason: e.to_string() })?;
                frame::write_frame(&mut send, &bytes)
                    .await
                    .map_err(|source| TransportError::Frame { peer, source })?;
                Ok((send, recv))
            }
            .await;
            if let Err(TransportError::ConnectionLost { .. }) = &result {
                inner.pool.forget(peer, &conn);
            }
            result
        };
        match tokio::time::timeout(inner.config.request_timeout, open).await {
            Err(_) => Err(TransportError::Timeout { peer, after: inner.config.request_timeout }),
            Ok(result) => result,
        }
    }

    /// Queues one gossip message for `peer` and returns at once; `false` if it was
    /// dropped because too many are in flight. A dead peer costs at most one task held
    /// for the connect timeout.
    ///
    /// The common case, a live connection to the peer and a message that fits in a few
    /// datagrams, is sent here and now: no task, no wake-up.
    pub fn send_gossip(&self, peer: SocketAddr, message: Vec<u8>) -> bool {
        if let Some(conn) = self.inner.ready_connection(peer)
            && !self.inner.pool.stalled(peer, &conn, self.inner.config.stall_timeout)
        {
            let form = GossipForm::of(&conn);
            match send_gossip_datagrams(&self.inner, &conn, form, &form.wire(&message)) {
                Ok(true) => {
                    Stats::bump(&self.inner.stats.gossip_sent);
                    return true;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::trace!(%peer, %error, "gossip not sent");
                    Stats::bump(&self.inner.stats.gossip_dropped);
                    return true;
                }
            }
        }
        let Ok(permit) = self.inner.gossip_slots.clone().try_acquire_owned() else {
            Stats::bump(&self.inner.stats.gossip_dropped);
            return false;
        };
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let _permit = permit;
            let send = async {
                let mut conn = inner.connection(peer, Dial::Gossip).await?;
                if inner.pool.stalled(peer, &conn, inner.config.stall_timeout) {
                    // QUIC would resume it once the path heals, but only at its next
                    // loss probe, seconds away after a long cut: dial afresh instead.
                    tracing::debug!(%peer, "connection stalled: closed, dialling again");
                    Stats::bump(&inner.stats.connections_stalled);
                    conn.close(CLOSE_STALLED.into(), b"nothing came back");
                    conn = inner.connection(peer, Dial::Gossip).await?;
                }
                let io = |e: &dyn std::fmt::Display| TransportError::ConnectionLost {
                    peer,
                    reason: e.to_string(),
                };
                let form = GossipForm::of(&conn);
                let wire = form.wire(&message);
                if send_gossip_datagrams(&inner, &conn, form, &wire).map_err(|e| io(&e))? {
                    return Ok(());
                }
                let mut stream = conn.open_uni().await.map_err(|e| io(&e))?;
                stream.write_all(&[STREAM_GOSSIP]).await.map_err(|e| io(&e))?;
                frame::write_frame(&mut stream, &wire)
                    .await
                    .map_err(|source| TransportError::Frame { peer, source })?;
                stream.finish().map_err(|e| io(&e))
            };
            match tokio::time::timeout(inner.config.request_timeout, send).await {
                Ok(Ok(())) => Stats::bump(&inner.stats.gossip_sent),
                Ok(Err(error)) => {
                    tracing::trace!(%peer, %error, "gossip not sent");
                    Stats::bump(&inner.stats.gossip_dropped);
                }
                Err(_) => Stats::bump(&inner.stats.gossip_dropped),
            }
        });
        true
    }

    /// Closes every connection (telling peers the site is leaving), then waits (a few
    /// seconds at most) for the close to reach them and for every task of the endpoint,
    /// with the service handles they hold, to end.
    pub async fn close(&self) {
        self.close_within(std::time::Duration::from_secs(3)).await;
    }

    /// [`Self::close`], waiting at most `settle` (a client that has somewhere to be:
    /// its peers hear the close, or see the connection idle out).
    pub async fn close_within(&self, settle: std::time::Duration) {
        self.inner.quinn.close(CLOSE_LEAVING.into(), b"leaving");
        self.inner.tasks.close();
        let done = async {
            self.inner.quinn.wait_idle().await;
            self.inner.tasks.wait().await;
        };
        if tokio::time::timeout(settle, done).await.is_err() {
            tracing::debug!(?settle, "endpoint tasks still running after close");
        }
    }
}

impl Inner {
    /// The pooled connection to `peer` if there is a live one and nothing holds its
    /// slot (a dial under way), and the peer's certificate is not revoked; else `None`,
    /// and [`Self::connection`] finds out why.
    fn ready_connection(&self, peer: SocketAddr) -> Option<quinn::Connection> {
        let conn = self.pool.ready(peer)?;
        revoked_peer(&conn, &self.revoked.borrow()).is_none().then_some(conn)
    }

    /// A pooled connection to `peer`; a new one is also served for the peer's streams.
    async fn connection(&self, peer: SocketAddr, dial: Dial) -> Result<quinn::Connection, TransportError> {
        let client = self.client.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (conn, fresh) =
            self.pool.connection(&self.quinn, client, &self.config, &self.stats, peer, dial).await?;
        let revoked = self.revoked.borrow().clone();
        if let Some(why) = revoked_peer(&conn, &revoked) {
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            self.pool.forget(peer, &conn);
            return Err(TransportError::Tls(format!("{peer}: {why}")));
        }
        if fresh && let Some(serve) = self.serve_outgoing.get() {
            serve(peer, conn.clone());
        }
        Ok(conn)
    }
}

fn server_config(
    credentials: &Credentials,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(credentials.server_config()?)
        .map_err(|e| TransportError::Tls(format!("server config: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(config.quinn_transport()?));
    server.max_incoming(config.max_connections.max(config.retry_above_handshakes * 2));
    Ok(server)
}

fn client_config(
    credentials: &Credentials,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(credentials.client_config()?)
        .map_err(|e| TransportError::Tls(format!("client config: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(config.quinn_transport()?));
    Ok(client)
}

async fn accept_loop<S: Service>(
    inner: Arc<Inner>,
    service: Arc<S>,
    gossip: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    while let Some(incoming) = inner.quinn.accept().await {
        if inner.handshakes.load(Ordering::Relaxed) >= inner.config.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            Stats::bump(&inner.stats.retries_sent);
            let _ = incoming.retry();
            continue;
        }
        if inner.quinn.open_connections() >= inner.config.max_connections {
            Stats::bump(&inner.stats.connections_refused);
            incoming.refuse();
            continue;
        }
        let peer = incoming.remote_address();
        let slot = match inner.per_addr.handshake(peer) {
            Ok(slot) => slot,
            Err(why) => {
                Stats::bump(&inner.stats.connections_refused);
                refused(&inner, peer, &why);
                incoming.refuse();
                continue;
            }
        };
        let handshake = HandshakeGuard::new(&inner);
        inner.tasks.spawn(serve_connection(
            inner.clone(),
            service.clone(),
            gossip.clone(),
            incoming,
            slot,
            handshake,
        ));
    }
}

/// Logs a refused connection from `peer`, at most once a minute per address (refusals
/// are always counted in the stats).
fn refused(inner: &Inner, peer: SocketAddr, why: &str) {
    if let Some(skipped) = inner.per_addr.should_log(peer) {
        tracing::warn!(%peer, why, not_logged_since_last = skipped, "refused a connection");
    }
}

/// One handshake in progress, counted from the moment the accept loop takes it (so a
/// burst of first flights cannot pass the retry threshold before their tasks run);
/// uncounted when the handshake ends, however it ends.
struct HandshakeGuard(Arc<Inner>);

impl HandshakeGuard {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.handshakes.fetch_add(1, Ordering::Relaxed);
        Self(inner.clone())
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request/response exchange on a new stream of `conn`: the response frame.
async fn exchange_on(
    conn: &quinn::Connection,
    peer: SocketAddr,
    bytes: &[u8],
    max_frame_bytes: usize,
) -> Result<Vec<u8>, TransportError> {
    let lost = |e: &dyn std::fmt::Display| TransportError::ConnectionLost { peer, reason: e.to_string() };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    frame::write_frame(&mut send, bytes).await.map_err(|source| TransportError::Frame { peer, source })?;
    send.finish().map_err(|e| lost(&e))?;
    frame::read_frame(&mut recv, max_frame_bytes)
        .await
        .map_err(|source| TransportError::Frame { peer, source })?
        .ok_or(TransportError::Frame { peer, source: FrameError::Truncated { got: 0, expected: 5 } })
}

async fn serve_connection<S: Service>(
    inner: Arc<Inner>,
    service: Arc<S>,
    gossip: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    incoming: quinn::Incoming,
    slot: Slot,
    handshake: HandshakeGuard,
) {
    let peer = incoming.remote_address();
    let conn = {
        let _handshake = handshake;
        let handshake = async { incoming.accept()?.await };
        match tokio::time::timeout(inner.config.handshake_timeout, handshake).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                Stats::bump(&inner.stats.handshakes_refused);
                refused(&inner, peer, &format!("the handshake failed: {error}"));
                return;
            }
            Err(_) => {
                Stats::bump(&inner.stats.handshakes_refused);
                refused(&inner, peer, "the handshake timed out");
                return;
            }
        }
    };
    let _slot = match slot.connected() {
        Ok(slot) => slot,
        Err(why) => {
            Stats::bump(&inner.stats.connections_refused);
            refused(&inner, peer, &why);
            conn.close(CLOSE_TOO_MANY.into(), b"too many connections from this address");
            return;
        }
    };
    Stats::bump(&inner.stats.handshakes_ok);
    inner.pool.adopt(peer, &conn).await;
    tracing::debug!(%peer, "connection accepted");
    serve_streams(inner, service, gossip, peer, conn).await;
}

/// Serves the streams the peer opens on `conn` (ours or theirs) until it closes.
async fn serve_streams<S: Service>(
    inner: Arc<Inner>,
    service: Arc<S>,
    gossip: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    addr: SocketAddr,
    conn: quinn::Connection,
) {
    let peer = match peer_identity(&conn) {
        Ok(identity) => Peer { addr, identity },
        Err(why) => {
            Stats::bump(&inner.stats.handshakes_refused);
            refused(&inner, addr, &why);
            conn.close(CLOSE_NO_IDENTITY.into(), b"the certificate names no cairn identity");
            return;
        }
    };
    let mut revoked = inner.revoked.subscribe();
    // The peer is checked against the revocation list when its connection starts and
    // each time the list changes (not for every message it sends).
    let mut list_changed = true;
    // Gossip messages this peer sent in parts, some parts still to come.
    let mut parts = Reassembly::default();
    let form = GossipForm::of(&conn);
    loop {
        if std::mem::take(&mut list_changed)
            && let Some(why) = revoked_peer(&conn, &revoked.borrow_and_update())
        {
            Stats::bump(&inner.stats.handshakes_refused);
            refused(&inner, addr, &why);
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            inner.pool.forget(addr, &conn);
            return;
        }
        tokio::select! {
            changed = revoked.changed() => match changed {
                Ok(()) => list_changed = true,
                Err(_) => break,
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    inner.tasks.spawn(serve_request(inner.clone(), service.clone(), peer.clone(), send, recv));
                }
                Err(error) => { tracing::debug!(%peer, %error, "connection ended"); break; }
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    inner.tasks.spawn(receive_gossip(inner.clone(), gossip.clone(), peer.clone(), form, recv));
                }
                Err(error) => { tracing::debug!(%peer, %error, "connection ended"); break; }
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) => receive_gossip_datagram(&inner, &gossip, &peer, form, &mut parts, &datagram),
                Err(error) => { tracing::debug!(%peer, %error, "connection ended"); break; }
            },
        }
    }
}

/// Reads one request, answers it, and closes the stream. Bad input gets an error
/// response naming the problem; the connection and the site go on.
async fn serve_request<S: Service>(
    inner: Arc<Inner>,
    service: Arc<S>,
    who: Peer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let peer = who.addr;
    let started = Instant::now();
    let read = async {
        let len = match frame::read_header(&mut recv, inner.config.max_frame_bytes).await {
            Ok(Some(len)) => len,
            Ok(None) => return Err(None),
            Err(e) => return Err(Some(WireError::new(WireErrorKind::BadFrame, e.to_string()))),
        };
        // Hold budget for the frame's bytes while they are buffered and handled.
        let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let permit = inner.request_budget.acquire_many(kib).await.map_err(|_| None)?;
        let payload = frame::read_payload(&mut recv, len)
            .await
            .map_err(|e| Some(WireError::new(WireErrorKind::BadFrame, e.to_string())))?;
        let request = codec::decode::<Request>(&payload).map_err(|e| {
            Some(WireError::new(WireErrorKind::Undecodable, format!("undecodable request: {e}")))
        })?;
        Ok((request, permit))
    };
    let deadline = inner.config.request_timeout;
    let response = match tokio::time::timeout(deadline, read).await {
        Err(_) => {
            Response::Error(WireError::new(WireErrorKind::Timeout, format!("no request within {deadline:?}")))
        }
        Ok(Err(None)) => return,
        Ok(Err(Some(error))) => Response::Error(error),
        Ok(Ok((Request::Pull(request), permit))) => {
            drop(permit);
            Stats::bump(&inner.stats.requests_served);
            tracing::debug!(%peer, db = %request.db, shard = request.shard, follow = request.follow, "pull stream");
            // What follows the request on the receive side are the receiver's acks.
            let acks = Some(crate::pull::PullAckReceiver {
                peer,
                recv,
                max_frame: ACK_FRAME_BYTES,
                _frames: std::marker::PhantomData,
            });
            service.pull(who, request, PullSender { peer, send, acks }).await;
            return;
        }
        Ok(Ok((Request::Subscribe(request), permit))) => {
            drop(permit);
            Stats::bump(&inner.stats.requests_served);
            tracing::debug!(%peer, db = %request.db, shard = request.shard, "subscription");
            // What follows the request on the receive side are the reader's credits.
            let out = SubscriptionSender {
                frames: FrameSender { peer, send, _frames: std::marker::PhantomData },
                credits: FrameReceiver::<Credit> {
                    peer,
                    recv,
                    max_frame: ACK_FRAME_BYTES,
                    _frames: std::marker::PhantomData,
                },
            };
            service.subscribe(who, request, out).await;
            return;
        }
        Ok(Ok((request, _permit))) => {
            let kind = request.kind();
            let response = service.handle(who, request).await;
            tracing::trace!(%peer, kind, elapsed = ?started.elapsed(), "request handled");
            response
        }
    };
    if let Response::Error(error) = &response {
        Stats::bump(&inner.stats.request_errors);
        tracing::info!(%peer, %error, "bad request");
        let _ = recv.stop(STOP_BAD_REQUEST.into());
    } else {
        Stats::bump(&inner.stats.requests_served);
    }
    let bytes = match codec::encode(&response) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot encode a response");
            return;
        }
    };
    if frame::write_frame(&mut send, &bytes).await.is_ok() {
        let _ = send.finish();
    }
}

/// Sends a gossip message on `conn` as datagrams if it fits: whole in one (RFC 9221: no
/// stream to open, no stream frame, nothing retransmitted, as gossip makes up for
/// loss), or, a little larger (Syn and SynAck at a hundred sites), in a few parts to a
/// peer that can put them together again. `Ok(false)`: it needs a stream.
fn send_gossip_datagrams(
    inner: &Inner,
    conn: &quinn::Connection,
    form: GossipForm,
    message: &[u8],
) -> Result<bool, quinn::SendDatagramError> {
    let max_datagram = conn.max_datagram_size().unwrap_or(0);
    if message.len() < max_datagram {
        let mut datagram = Vec::with_capacity(message.len() + 1);
        datagram.push(STREAM_GOSSIP);
        datagram.extend_from_slice(message);
        conn.send_datagram(datagram.into())?;
        return Ok(true);
    }
    if form.parts {
        let id = inner.gossip_message_ids.fetch_add(1, Ordering::Relaxed);
        if let Some(parts) = gossip_parts::split(id, message, max_datagram) {
            for part in parts {
                conn.send_datagram(part.into())?;
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the peer on a connection reads of gossip, by the ALPN protocol it negotiated.
#[derive(Debug, Clone, Copy, Default)]
struct GossipForm {
    /// Messages in a few datagrams (`cairn/2` and later).
    parts: bool,
    /// Packed messages ([`gossip_packing`], `cairn/3`).
    packed: bool,
}

impl GossipForm {
    fn of(conn: &quinn::Connection) -> Self {
        let protocol = conn
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol);
        let packed = protocol.as_deref() == Some(crate::tls::ALPN_GOSSIP_PACKED);
        Self { parts: packed || protocol.as_deref() == Some(crate::tls::ALPN_GOSSIP_PARTS), packed }
    }

    /// `message` as this peer takes it.
    fn wire<'m>(&self, message: &'m [u8]) -> std::borrow::Cow<'m, [u8]> {
        if self.packed { gossip_packing::pack(message).into() } else { message.into() }
    }

    /// The message in what this peer sent, or why it cannot be read.
    fn read(&self, wire: Vec<u8>, max: usize) -> Result<Vec<u8>, gossip_packing::UnpackError> {
        if self.packed { gossip_packing::unpack(&wire, max) } else { Ok(wire) }
    }
}

/// Takes one gossip message carried in a datagram (kind byte, then the message), or one
/// part of one ([`gossip_parts`]), from a site only, into the gossip inbox.
fn receive_gossip_datagram(
    inner: &Inner,
    gossip: &mpsc::Sender<(SocketAddr, Vec<u8>)>,
    who: &Peer,
    form: GossipForm,
    parts: &mut Reassembly,
    datagram: &[u8],
) {
    if !who.identity.is_site() {
        Stats::bump(&inner.stats.gossip_forbidden);
        if inner.per_addr.should_log(who.addr).is_some() {
            tracing::warn!(%who, "gossip from a certificate that is not a site's: ignored");
        }
        return;
    }
    let deliver = |wire: Vec<u8>| match form.read(wire, inner.config.max_gossip_bytes) {
        Ok(message) => match gossip.try_send((who.addr, message)) {
            Ok(()) => Stats::bump(&inner.stats.gossip_received),
            Err(_) => Stats::bump(&inner.stats.gossip_dropped),
        },
        Err(error) => {
            Stats::bump(&inner.stats.request_errors);
            if inner.per_addr.should_log(who.addr).is_some() {
                tracing::info!(%who, %error, "bad gossip message: ignored");
            }
        }
    };
    match datagram.split_first() {
        Some((&STREAM_GOSSIP, message)) if message.len() <= inner.config.max_gossip_bytes => {
            deliver(message.to_vec());
        }
        Some((&gossip_parts::KIND_PART, _)) => match parts.take(datagram, inner.config.max_gossip_bytes) {
            Ok(taken) => {
                if taken.gave_up {
                    Stats::bump(&inner.stats.gossip_dropped);
                }
                if let Some(message) = taken.message {
                    deliver(message);
                }
            }
            Err(error) => {
                Stats::bump(&inner.stats.request_errors);
                if inner.per_addr.should_log(who.addr).is_some() {
                    tracing::info!(%who, %error, "bad gossip part: ignored");
                }
            }
        },
        _ => {
            Stats::bump(&inner.stats.request_errors);
            if inner.per_addr.should_log(who.addr).is_some() {
                tracing::info!(%who, len = datagram.len(), "bad gossip datagram: ignored");
            }
        }
    }
}

async fn receive_gossip(
    inner: Arc<Inner>,
    gossip: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    who: Peer,
    form: GossipForm,
    mut recv: quinn::RecvStream,
) {
    let peer = who.addr;
    if !who.identity.is_site() {
        // Only sites gossip; an operator's or an application's certificate is not heard.
        Stats::bump(&inner.stats.gossip_forbidden);
        if inner.per_addr.should_log(peer).is_some() {
            tracing::warn!(%who, "gossip from a certificate that is not a site's: ignored");
        }
        let _ = recv.stop(STOP_BAD_REQUEST.into());
        return;
    }
    let read = async {
        let mut kind = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut recv, &mut kind).await.map_err(|e| e.to_string())?;
        if kind[0] != STREAM_GOSSIP {
            return Err(format!("unknown stream kind {}", kind[0]));
        }
        let wire = frame::read_frame(&mut recv, inner.config.max_gossip_bytes)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "empty gossip stream".to_owned())?;
        form.read(wire, inner.config.max_gossip_bytes).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(inner.config.request_timeout, read).await {
        Ok(Ok(message)) => match gossip.try_send((peer, message)) {
            Ok(()) => Stats::bump(&inner.stats.gossip_received),
            Err(_) => Stats::bump(&inner.stats.gossip_dropped),
        },
        Ok(Err(error)) => {
            Stats::bump(&inner.stats.request_errors);
            tracing::info!(%peer, %error, "bad gossip stream");
            let _ = recv.stop(STOP_BAD_REQUEST.into());
        }
        Err(_) => {
            Stats::bump(&inner.stats.request_errors);
            let _ = recv.stop(STOP_BAD_REQUEST.into());
        }
    }
}
