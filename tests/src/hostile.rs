//! A hostile member: something holding a valid certificate of the cluster that gossips
//! values no honest site would and floods a site with pulls, reads and half-open
//! handshakes — to check that nothing a member says can crash a site, stop
//! automation or fill its memory.
//!
//! It joins gossip as chitchat does (over the same QUIC carriage as real sites), with
//! key/values it writes raw: encoded from mirror structs with plain numbers, so it can
//! say what cairn's own types cannot hold (a shard count of `u32::MAX`, a replication
//! factor of 0, a seq above the maximum).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_gossip::signed::{CERT_KEY, encode_certificates, sign_value};
use cairn_gossip::summary::{Label, ReplicaPhase, SiteSummary, SummaryKey, encode_value};
use cairn_gossip::{GossipName, QuicCarriage};
use cairn_inventory::{ClusterId, DbName, Frontier, Hlc, Retention, Role, SiteId, codec, now_ms};
use cairn_transport::{
    Credentials, Endpoint, Peer, PullFrame, PullRequest, PullSender, Request, Response, Service, Signer,
    TransportConfig,
};
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;

/// A db summary as the wire carries it, with plain numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RawDb {
    /// Shard count (any number).
    pub shards: u32,
    /// Replication factor (any number).
    pub replication: u32,
    /// Retention.
    pub retention: Retention,
    /// Routing version (0: version 1, FNV-1a 64).
    pub routing: u32,
    /// Creation HLC.
    pub created: Hlc,
    /// Creating site.
    pub origin: SiteId,
    /// Last change.
    pub changed: Hlc,
    /// A tombstone.
    pub dropped: bool,
    /// Superseded drop.
    pub supersedes: Option<Hlc>,
    /// The operator's seal (none: a member's own making).
    pub seal: Option<cairn_inventory::OperatorSeal>,
}

/// A replica summary as the wire carries it, with a frontier of any length and seqs.
#[derive(Debug, Clone, Serialize)]
pub struct RawReplica {
    /// Phase.
    pub phase: ReplicaPhase,
    /// Entries.
    pub entries: u64,
    /// Bytes.
    pub bytes: u64,
    /// Digest.
    pub frontier_digest: u64,
    /// The frontier, as pairs (any length, any seq, duplicates allowed).
    pub frontier: Vec<(SiteId, u64)>,
    /// Progress.
    pub progress: Option<()>,
}

/// Any serialisable value as a chitchat value (the codec's envelope in base64).
pub fn raw_value<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(codec::encode(value).expect("encodes"))
}

/// A db record gossiped as `db:<name>`, created at `created`.
pub fn raw_db(shards: u32, replication: u32, created: Hlc, origin: SiteId) -> String {
    raw_value(&RawDb {
        shards,
        replication,
        retention: Retention::default(),
        routing: 0,
        created,
        origin,
        changed: created,
        dropped: false,
        supersedes: None,
        seal: None,
    })
}

/// A service that answers every request with a refusal and every pull with `Refused`.
#[derive(Debug)]
struct Refuses;

impl Service for Refuses {
    async fn handle(&self, _peer: Peer, _request: Request) -> Response {
        Response::Rejected { reason: "hostile member".into() }
    }

    async fn pull(&self, _peer: Peer, _request: PullRequest, mut out: PullSender) {
        let _ = out.send(&PullFrame::Refused { reason: "hostile member".into() }).await;
        out.finish();
    }
}

/// The hostile member: its endpoint, gossip and id.
pub struct HostileMember {
    /// Its endpoint (serves refusals, makes floods).
    pub endpoint: Endpoint,
    /// Its site id, as it gossips it.
    pub site_id: SiteId,
    generation: u64,
    chitchat: ChitchatHandle,
    credentials: Credentials,
    signer: Signer,
    summary: SiteSummary,
}

impl std::fmt::Debug for HostileMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileMember").field("site_id", &self.site_id).finish_non_exhaustive()
    }
}

impl HostileMember {
    /// Joins the cluster of `cluster_id` at `listen`, seeded by `seeds`, under the site
    /// id its certificate names, as the role it names (a replicant's, so that no planner
    /// gives it replicas), gossiping `values` besides its `site` key — each signed as an
    /// honest site signs, so what is refused is refused for what it says.
    pub async fn join(
        credentials: Credentials,
        cluster_id: ClusterId,
        listen: SocketAddr,
        seeds: &[SocketAddr],
        values: Vec<(String, String)>,
    ) -> Self {
        let site_id = credentials.identity().site_id().unwrap_or_else(SiteId::random);
        Self::join_as(credentials, cluster_id, listen, seeds, site_id, values).await
    }

    /// [`Self::join`], but gossiping under `site_id` (another site's, to forge), its
    /// values signed with its own key and its own certificate gossiped.
    pub async fn join_as(
        credentials: Credentials,
        cluster_id: ClusterId,
        listen: SocketAddr,
        seeds: &[SocketAddr],
        site_id: SiteId,
        values: Vec<(String, String)>,
    ) -> Self {
        let (endpoint, inbox) =
            Endpoint::serve(listen, &credentials, TransportConfig::default(), Arc::new(Refuses))
                .expect("bind");
        let role = match credentials.identity() {
            cairn_transport::Identity::Site(_) => Role::Core,
            _ => Role::Replicant,
        };
        let site = SiteSummary {
            drain: None,
            role,
            addr: Label::truncated(&listen.to_string()),
            version: Label::truncated("hostile"),
            started_ms: now_ms(),
            zone: None,
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
        };
        let summary = site.clone();
        let mut key_values = vec![(SummaryKey::Site.render(), encode_value(&site))];
        key_values.extend(values);
        let generation = now_ms();
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(GossipName::of(site_id).to_string(), generation, listen),
            cluster_id: cairn_gossip::name::cluster_tag(cluster_id),
            gossip_interval: Duration::from_millis(100),
            listen_addr: listen,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let carriage = QuicCarriage::new(endpoint.clone(), inbox);
        let chitchat = chitchat::spawn_chitchat(config, Vec::new(), &carriage).await.expect("chitchat");
        let signer = credentials.signer().expect("a signing key");
        let member = Self { endpoint, site_id, generation, chitchat, credentials, signer, summary };
        member.set_raw(CERT_KEY, &encode_certificates(&[member.signer.certificate()])).await;
        for (key, value) in key_values {
            member.set(&key, &value).await;
        }
        member
    }

    /// The site summary it joined with (to gossip a changed one with [`Self::set`]).
    pub fn summary(&self) -> SiteSummary {
        self.summary.clone()
    }

    /// Gossips `payload` under `key` from now on, signed as an honest site signs.
    pub async fn set(&self, key: &str, payload: &str) {
        let chitchat = self.chitchat.chitchat();
        let mut chitchat = chitchat.lock().await;
        let state = chitchat.self_node_state();
        let version = state.max_version() + 1;
        state.set(key, sign_value(&self.signer, self.site_id, self.generation, version, key, payload));
    }

    /// Gossips `value` under `key` from now on, as it is (unsigned, or signed for
    /// something else).
    pub async fn set_raw(&self, key: &str, value: &str) {
        self.chitchat.chitchat().lock().await.self_node_state().set(key, value);
    }

    /// `payload` signed for `key` at chitchat `version` (to replay it at another).
    pub fn signed(&self, key: &str, version: u64, payload: &str) -> String {
        sign_value(&self.signer, self.site_id, self.generation, version, key, payload)
    }

    /// Opens `n` pull streams of `db`/`shard` at `at` (in the background) and never
    /// reads them: what an upstream must not let pin its threads or fill its memory.
    /// Answers how many were opened; the streams stay open while the handles live.
    pub async fn open_stalled_pulls(
        &self,
        at: SocketAddr,
        db: &str,
        shard: u32,
        n: usize,
    ) -> (usize, Vec<cairn_transport::PullReceiver>) {
        let mut held = Vec::new();
        for _ in 0..n {
            let request = PullRequest {
                db: DbName::new(db).expect("name"),
                shard,
                frontier: Frontier::default(),
                cursor: 0,
                follow: true,
                receiver: self.site_id,
                receiver_own_seq: 0,
            };
            match self.endpoint.pull(at, &request).await {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
        (held.len(), held)
    }

    /// Sends a pull request whose frontier lists `origins` origins (small ids, so the
    /// frame stays under the size limit): answers what came back.
    pub async fn pull_with_huge_frontier(&self, at: SocketAddr, db: &str, origins: u64) -> String {
        #[derive(Serialize)]
        struct RawPull {
            db: DbName,
            shard: u32,
            frontier: Vec<(SiteId, u64)>,
            cursor: u64,
            follow: bool,
            receiver: SiteId,
            receiver_own_seq: u64,
        }
        // `Request::Pull` is variant 6 of the request enum: encode it by hand.
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum RawRequest {
            Status,
            Schedule,
            Dump,
            CreateDb,
            Publish,
            Read,
            Pull(RawPull),
        }
        let raw = RawRequest::Pull(RawPull {
            db: DbName::new(db).expect("name"),
            shard: 0,
            frontier: (1..=origins).map(|i| (SiteId(u128::from(i)), 1)).collect(),
            cursor: 0,
            follow: false,
            receiver: self.site_id,
            receiver_own_seq: 0,
        });
        let bytes = codec::encode(&raw).expect("encodes");
        let connection = raw_quic(&self.credentials, at).await;
        let Ok(conn) = connection else { return format!("no connection: {connection:?}") };
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            cairn_transport::frame::write_frame(&mut send, &bytes).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            let frame =
                cairn_transport::frame::read_frame(&mut recv, 1 << 20).await.map_err(|e| e.to_string())?;
            let frame = frame.ok_or_else(|| "no answer".to_owned())?;
            Ok::<String, String>(match codec::decode::<Response>(&frame) {
                Ok(response) => format!("{response:?}"),
                Err(_) => format!("{:?}", codec::decode::<PullFrame>(&frame)),
            })
        };
        match tokio::time::timeout(Duration::from_secs(20), exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => format!("error: {error}"),
            Err(_) => "no answer within 20 s".into(),
        }
    }

    /// Starts `n` handshakes at `at` from each of `sockets` UDP sockets and never
    /// finishes them (each socket sends only the client's first flight): half-open
    /// connections the site must cap per address and time out.
    pub fn half_open_handshakes(&self, at: SocketAddr, sockets: usize, n: usize) -> usize {
        let rustls = self.credentials.client_config().expect("client config");
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(rustls).expect("TLS 1.3");
        let client = quinn_proto::ClientConfig::new(Arc::new(crypto));
        let mut sent = 0;
        let mut held = Vec::new();
        for _ in 0..sockets {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
            let mut endpoint = quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            );
            for _ in 0..n {
                let now = Instant::now();
                let Ok((_, mut conn)) =
                    endpoint.connect(now, client.clone(), at, cairn_transport::tls::SERVER_NAME)
                else {
                    continue;
                };
                let mut buf = Vec::new();
                if let Some(transmit) = conn.poll_transmit(now, 1, &mut buf)
                    && socket.send_to(&buf[..transmit.size], at).is_ok()
                {
                    sent += 1;
                }
                held.push(conn);
            }
            held.clear();
        }
        sent
    }

    /// Stops gossiping and closes the endpoint.
    pub async fn leave(self) {
        let _ = self.chitchat.shutdown().await;
        self.endpoint.close().await;
    }
}

/// A plain quinn connection to `at` with `credentials` (to send hand-made frames).
async fn raw_quic(credentials: &Credentials, at: SocketAddr) -> Result<quinn::Connection, String> {
    let rustls = credentials.client_config().map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls).map_err(|e| e.to_string())?;
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal")).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(at, cairn_transport::tls::SERVER_NAME).map_err(|e| e.to_string())?;
    connecting.await.map_err(|e| e.to_string())
}

/// Reads `db`/`shard` at `at` `n` times, `concurrency` at once, through `endpoint` (an
/// application's: only clients and operators may read): answers how many were
/// answered with entries, how many refused as busy, and how many otherwise.
pub async fn flood_reads(
    endpoint: &Endpoint,
    at: SocketAddr,
    db: &str,
    shard: u32,
    n: usize,
    concurrency: usize,
) -> (usize, usize, usize) {
    let request = Request::Read { db: DbName::new(db).expect("name"), shard, from: 0, max: 10_000 };
    let (mut entries, mut busy, mut other) = (0, 0, 0);
    let mut rest = n;
    while rest > 0 {
        let batch = rest.min(concurrency);
        rest -= batch;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (endpoint, request) = (endpoint.clone(), request.clone());
            tasks.spawn(async move { endpoint.request(at, &request).await });
        }
        while let Some(done) = tasks.join_next().await {
            match done.expect("task") {
                Ok(Response::Entries { .. }) => entries += 1,
                Err(cairn_transport::TransportError::Remote { error, .. })
                    if error.kind == cairn_transport::WireErrorKind::Busy =>
                {
                    busy += 1
                }
                _ => other += 1,
            }
        }
    }
    (entries, busy, other)
}
