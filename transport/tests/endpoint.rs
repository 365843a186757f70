//! Real endpoints on loopback: mutual TLS, framing, bad input and load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_transport::frame::{self, FRAME_VERSION};
use cairn_transport::tls::{ClusterCa, SERVER_NAME};
use cairn_transport::{
    Credentials, Endpoint, PullFrame, PullRequest, PullSender, PullStart, Request, Response, SealedBatch,
    Service, SiteStatus, TransportConfig, TransportError, WireErrorKind,
};
use cairn_types::{ClusterId, DbName, Entry, EntryId, Frontier, Role, SiteId};

/// Answers `Status` with a counter of requests seen.
struct Counting(AtomicU64);

impl Service for Counting {
    async fn handle(&self, _peer: cairn_transport::Peer, request: Request) -> Response {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        match request {
            Request::Status => Response::Status(SiteStatus {
                site_id: SiteId(u128::from(n)),
                cluster_id: ClusterId(0),
                version: "test".into(),
                store_format: 1,
                uptime_ms: 0,
                role: Role::Core,
                data: Default::default(),
                retention: Default::default(),
                certificate_expires_ms: 0,
            }),
            _ => Response::Rejected { reason: "not here".into() },
        }
    }

    /// Streams `cursor` entries in batches of 10 (so a test can ask for any amount),
    /// and for a follow stream an `Idle` frame after them.
    async fn pull(&self, _peer: cairn_transport::Peer, request: PullRequest, mut out: PullSender) {
        let start = PullStart {
            site: SiteId(9),
            frontier: Frontier::default(),
            next_arrival: request.cursor,
            entries: request.cursor,
            bytes: 0,
        };
        if out.send(&PullFrame::Start(start)).await.is_err() {
            return;
        }
        let entries: Vec<Entry> = (1..=request.cursor)
            .map(|seq| Entry::plain(EntryId { origin: SiteId(9), seq }, 0, vec![7; 100]))
            .collect();
        for (i, chunk) in entries.chunks(10).enumerate() {
            let batch = SealedBatch::seal(chunk, (i * 10 + chunk.len()) as u64).unwrap();
            if out.send(&PullFrame::Batch(batch)).await.is_err() {
                return;
            }
        }
        if request.follow {
            let idle = PullFrame::Idle { frontier: Frontier::default(), next_arrival: request.cursor };
            if out.send(&idle).await.is_err() {
                return;
            }
            out.stopped().await;
            return;
        }
        out.finish();
    }
}

/// A site identity with a fresh id.
fn any_site() -> cairn_transport::Identity {
    cairn_transport::Identity::Site(SiteId::random())
}

fn creds(ca: &ClusterCa, _name: &str) -> Credentials {
    Credentials::from_pem(ca.cert_pem(), &ca.issue(&any_site(), 1).unwrap()).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn site(ca: &ClusterCa, name: &str) -> Endpoint {
    let service = Arc::new(Counting(AtomicU64::new(0)));
    Endpoint::serve(loopback(), &creds(ca, name), TransportConfig::default(), service).unwrap().0
}

fn quick() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..TransportConfig::default()
    }
}

#[tokio::test]
async fn sites_with_cluster_certificates_talk() {
    let ca = ClusterCa::generate().unwrap();
    let a = site(&ca, "a");
    let b = site(&ca, "b");
    for _ in 0..3 {
        let response = a.request(b.local_addr(), &Request::Status).await.unwrap();
        assert!(matches!(response, Response::Status(_)), "{response:?}");
    }
    let response = b.request(a.local_addr(), &Request::Status).await.unwrap();
    assert!(matches!(response, Response::Status(_)));
    assert_eq!(b.stats().requests_served, 3);
    // One connection, made by a, serves both directions: b answers a's requests on it
    // and sends its own on it too.
    assert_eq!(a.stats().handshakes_ok, 1);
    assert_eq!(b.stats().handshakes_ok, 1);
    assert_eq!(a.stats().requests_served, 1);
}

#[tokio::test]
async fn the_wire_counters_count_every_datagram_both_ways() {
    let ca = ClusterCa::generate().unwrap();
    let (a, b) = (site(&ca, "a"), site(&ca, "b"));
    for _ in 0..5 {
        a.request(b.local_addr(), &Request::Status).await.unwrap();
    }
    // Let the last acknowledgements land, then nothing moves between the two.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sa, sb) = (a.stats(), b.stats());
    // A handshake (with certificates) and five requests: several packets each way.
    assert!(sa.datagrams_sent >= 6 && sb.datagrams_sent >= 6, "{sa:?} {sb:?}");
    assert!(sa.bytes_sent > 2_000 && sb.bytes_sent > 2_000, "{sa:?} {sb:?}");
    // Loopback loses nothing: what one sent, the other received.
    assert_eq!((sa.datagrams_sent, sa.bytes_sent), (sb.datagrams_received, sb.bytes_received));
    assert_eq!((sb.datagrams_sent, sb.bytes_sent), (sa.datagrams_received, sa.bytes_received));
}

/// A raw quinn client with any rustls client config, to present what we like.
async fn raw_request(client: rustls::ClientConfig, server: SocketAddr) -> Result<Vec<u8>, String> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let attempt = async {
        let conn = endpoint
            .connect(server, SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let payload = cairn_types::codec::encode(&Request::Status).unwrap();
        frame::write_frame(&mut send, &payload).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        frame::read_frame(&mut recv, 1 << 20)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no answer".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| "timed out".to_owned())?
}

fn client_with(ca: &ClusterCa, client_cert: Option<(&str, &str)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"cairn/1".to_vec()];
    config
}

#[tokio::test]
async fn clients_without_a_cluster_certificate_are_refused_in_the_handshake() {
    let ca = ClusterCa::generate().unwrap();
    let server = site(&ca, "server");
    let addr = server.local_addr();

    // The control: a raw client with a real cluster certificate gets an answer.
    let good = ca.issue(&any_site(), 1).unwrap();
    assert!(raw_request(client_with(&ca, Some((&good.cert_pem, &good.key_pem))), addr).await.is_ok());

    // No certificate.
    assert!(raw_request(client_with(&ca, None), addr).await.is_err());
    // A self-signed certificate.
    let selfie = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).unwrap();
    let (cert, key) = (selfie.cert.pem(), selfie.signing_key.serialize_pem());
    assert!(raw_request(client_with(&ca, Some((&cert, &key))), addr).await.is_err());
    // A certificate from another cluster's CA.
    let other = ClusterCa::generate().unwrap().issue(&any_site(), 1).unwrap();
    assert!(raw_request(client_with(&ca, Some((&other.cert_pem, &other.key_pem))), addr).await.is_err());
    // An expired certificate from the right CA.
    let now = std::time::SystemTime::now();
    let expired = ca
        .issue_valid_between(
            &any_site(),
            now - Duration::from_secs(3 * 86_400),
            now - Duration::from_secs(86_400),
        )
        .unwrap();
    assert!(raw_request(client_with(&ca, Some((&expired.cert_pem, &expired.key_pem))), addr).await.is_err());

    let stats = server.stats();
    assert_eq!(stats.requests_served, 1, "only the control was answered");
    assert_eq!(stats.handshakes_refused, 4, "{stats:?}");
}

#[tokio::test]
async fn a_site_of_another_cluster_is_refused_both_ways() {
    let ours = ClusterCa::generate().unwrap();
    let theirs = ClusterCa::generate().unwrap();
    let a = site(&ours, "a");
    let b = Endpoint::serve(loopback(), &creds(&theirs, "b"), quick(), Arc::new(Counting(AtomicU64::new(0))))
        .unwrap()
        .0;
    let err = b.request(a.local_addr(), &Request::Status).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    let err = a.request(b.local_addr(), &Request::Status).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    assert!(a.stats().requests_served == 0 && b.stats().requests_served == 0);
}

/// A raw connection with valid credentials, to send malformed frames on.
async fn raw_connection(ca: &ClusterCa, server: SocketAddr) -> quinn::Connection {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(creds(ca, "raw").client_config().unwrap()).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint.connect(server, SERVER_NAME).unwrap().await.unwrap()
}

async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let payload = frame::read_frame(&mut recv, 1 << 20).await.unwrap().expect("an answer");
    cairn_types::codec::decode(&payload).unwrap()
}

#[tokio::test]
async fn bad_frames_get_named_errors_and_the_site_keeps_serving() {
    let ca = ClusterCa::generate().unwrap();
    let server = site(&ca, "server");
    let conn = raw_connection(&ca, server.local_addr()).await;
    let valid = {
        let payload = cairn_types::codec::encode(&Request::Status).unwrap();
        let mut bytes = frame::header(payload.len()).unwrap().to_vec();
        bytes.extend(payload);
        bytes
    };
    let expect_error = |response: Response, kind: WireErrorKind, words: &str| match response {
        Response::Error(e) => {
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        other => panic!("expected an error, got {other:?}"),
    };
    // Garbage: not a frame version we know.
    expect_error(
        send_raw(&conn, b"GET / HTTP/1.1\r\n\r\n").await,
        WireErrorKind::BadFrame,
        "unsupported frame version",
    );
    // Truncated: the header promises more than the stream carries.
    expect_error(send_raw(&conn, &valid[..valid.len() - 1]).await, WireErrorKind::BadFrame, "truncated");
    expect_error(send_raw(&conn, &valid[..3]).await, WireErrorKind::BadFrame, "truncated");
    // Oversized: refused from the length prefix alone.
    expect_error(
        send_raw(&conn, &[FRAME_VERSION, 0x7f, 0xff, 0xff, 0xff]).await,
        WireErrorKind::BadFrame,
        "exceeds",
    );
    // A valid frame around bytes that are no request.
    expect_error(
        send_raw(&conn, &[FRAME_VERSION, 0, 0, 0, 3, 1, 200, 7]).await,
        WireErrorKind::Undecodable,
        "undecodable",
    );
    // An unknown codec version inside a valid frame.
    expect_error(
        send_raw(&conn, &[FRAME_VERSION, 0, 0, 0, 2, 9, 0]).await,
        WireErrorKind::Undecodable,
        "version 9",
    );
    // The same connection, and new ones, still get answers.
    assert!(matches!(send_raw(&conn, &valid).await, Response::Status(_)));
    let client = site(&ca, "client");
    assert!(matches!(
        client.request(server.local_addr(), &Request::Status).await.unwrap(),
        Response::Status(_)
    ));
    assert_eq!(server.stats().request_errors, 6);
}

#[tokio::test]
async fn a_dead_peer_does_not_block_requests_to_live_ones() {
    let ca = ClusterCa::generate().unwrap();
    let live = site(&ca, "live");
    let client =
        Endpoint::serve(loopback(), &creds(&ca, "client"), quick(), Arc::new(Counting(AtomicU64::new(0))))
            .unwrap()
            .0;
    // A UDP port with nobody answering QUIC.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap();
    let dead_request = tokio::spawn({
        let client = client.clone();
        async move { client.request(dead, &Request::Status).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    client.request(live.local_addr(), &Request::Status).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "the live peer waited {:?}", started.elapsed());
    let err = dead_request.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    // Right after a failure the dead peer is skipped at once, with the reason.
    let started = std::time::Instant::now();
    let err = client.request(dead, &Request::Status).await.unwrap_err();
    assert!(matches!(err, TransportError::Backoff { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(100));
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_from_ten_connections() {
    let ca = ClusterCa::generate().unwrap();
    let server = site(&ca, "server");
    let addr = server.local_addr();
    let clients: Vec<Endpoint> = (0..10)
        .map(|i| Endpoint::client(&creds(&ca, &format!("c{i}")), TransportConfig::default(), addr).unwrap())
        .collect();
    // Warm up the connections so the baseline includes them.
    for c in &clients {
        c.request(addr, &Request::Status).await.unwrap();
    }
    let before = rss_kib();
    let mut tasks = tokio::task::JoinSet::new();
    for c in &clients {
        for _ in 0..1000 {
            let c = c.clone();
            tasks.spawn(async move { c.request(addr, &Request::Status).await });
        }
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        assert!(matches!(result.unwrap().unwrap(), Response::Status(_)));
        ok += 1;
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert_eq!(ok, 10_000);
    assert_eq!(server.stats().requests_served, 10_010);
    assert!(grown_mib < 256, "memory grew by {grown_mib} MiB for 10,000 small requests");
    eprintln!("10,000 requests answered; RSS grew by {grown_mib} MiB");
}

#[tokio::test]
async fn gossip_messages_arrive_with_the_senders_listening_address() {
    let ca = ClusterCa::generate().unwrap();
    let service = Arc::new(Counting(AtomicU64::new(0)));
    let (a, _) =
        Endpoint::serve(loopback(), &creds(&ca, "a"), TransportConfig::default(), service.clone()).unwrap();
    let (b, mut inbox) =
        Endpoint::serve(loopback(), &creds(&ca, "b"), TransportConfig::default(), service).unwrap();
    // Small messages travel in one QUIC datagram, those of a few datagrams' size in
    // parts, large ones (beyond four datagrams) in streams: more of them at once than a
    // peer may open (`MAX_GOSSIP_STREAMS`), so some wait for the receiver to allow more.
    let n = 3 * cairn_transport::MAX_GOSSIP_STREAMS as u8 + 20;
    let len = |i: u8| match i % 3 {
        0 => 100 + usize::from(i),
        1 => 2_500 + usize::from(i),
        _ => 6_000 + usize::from(i),
    };
    for i in 0..n {
        assert!(a.send_gossip(b.local_addr(), vec![i; len(i)]));
    }
    let mut got = Vec::new();
    while got.len() < usize::from(n) {
        let (from, message) =
            tokio::time::timeout(Duration::from_secs(5), inbox.0.recv()).await.unwrap().unwrap();
        assert_eq!(from, a.local_addr());
        assert_eq!(message, vec![message[0]; len(message[0])], "each message arrives whole");
        got.push(message[0]);
    }
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<u8>>());
    assert_eq!(b.stats().gossip_received, u64::from(n));
    // Gossip to nobody is dropped quietly, without blocking the sender.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(a.send_gossip(silent.local_addr().unwrap(), vec![1]));
}

#[tokio::test]
async fn handshakes_past_the_threshold_must_prove_their_address() {
    let ca = ClusterCa::generate().unwrap();
    // Threshold 0: every new connection is sent a QUIC retry first.
    let config = TransportConfig { retry_above_handshakes: 0, ..TransportConfig::default() };
    let (server, _) =
        Endpoint::serve(loopback(), &creds(&ca, "server"), config, Arc::new(Counting(AtomicU64::new(0))))
            .unwrap();
    let client =
        Endpoint::client(&creds(&ca, "client"), TransportConfig::default(), server.local_addr()).unwrap();
    let response = client.request(server.local_addr(), &Request::Status).await.unwrap();
    assert!(matches!(response, Response::Status(_)), "a client that answers the retry is served");
    assert_eq!(server.stats().retries_sent, 1);
    assert_eq!(server.stats().handshakes_ok, 1);
}

fn pull_request(entries: u64, follow: bool) -> PullRequest {
    PullRequest {
        db: DbName::new("d").unwrap(),
        shard: 0,
        frontier: Frontier::default(),
        cursor: entries,
        follow,
        receiver: SiteId(1),
        receiver_own_seq: 0,
    }
}

#[tokio::test]
async fn pull_streams_carry_sealed_batches_to_the_end() {
    let ca = ClusterCa::generate().unwrap();
    let (a, b) = (site(&ca, "a"), site(&ca, "b"));
    let mut stream = b.pull(a.local_addr(), &pull_request(95, false)).await.unwrap();
    let Some(PullFrame::Start(start)) = stream.next().await.unwrap() else { panic!("no start frame") };
    assert_eq!(start.next_arrival, 95);
    let mut got = Vec::new();
    while let Some(frame) = stream.next().await.unwrap() {
        let PullFrame::Batch(batch) = frame else { panic!("unexpected {frame:?}") };
        got.extend(batch.open().unwrap());
    }
    assert_eq!(got.len(), 95);
    assert!(got.iter().enumerate().all(|(i, e)| e.id.seq == i as u64 + 1));
    // Requests still work on the same connection.
    assert!(matches!(b.request(a.local_addr(), &Request::Status).await, Ok(Response::Status(_))));
}

#[tokio::test]
async fn a_stopped_follow_stream_ends_on_both_sides() {
    let ca = ClusterCa::generate().unwrap();
    let (a, b) = (site(&ca, "a"), site(&ca, "b"));
    let mut stream = b.pull(a.local_addr(), &pull_request(5, true)).await.unwrap();
    let mut frames = 0;
    loop {
        match stream.next().await.unwrap() {
            Some(PullFrame::Idle { .. }) => break,
            Some(_) => frames += 1,
            None => panic!("a follow stream ended by itself"),
        }
    }
    assert_eq!(frames, 2, "start and one batch");
    stream.stop(cairn_transport::pull::STOP_DONE);
    // The upstream's task ends (it waits on `stopped`), so closing is prompt.
    tokio::time::timeout(Duration::from_secs(2), a.close()).await.unwrap();
}

/// A bare quinn endpoint with a site's certificate that offers only the ALPN protocols
/// given: a site of another build, as far as the wire can tell.
fn raw_site_server(ca: &ClusterCa, alpn: &[&[u8]]) -> quinn::Endpoint {
    let mut tls = creds(ca, "raw").server_config().unwrap();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), loopback()).unwrap()
}

/// The datagrams and unidirectional streams a gossiping site sends to `server` for one
/// message (each stream as its kind byte and frame).
async fn gossip_as_seen_by(
    server: &quinn::Endpoint,
    sender: &Endpoint,
    message: Vec<u8>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    assert!(sender.send_gossip(server.local_addr().unwrap(), message));
    let conn = server.accept().await.unwrap().await.unwrap();
    let (mut datagrams, mut streams) = (Vec::new(), Vec::new());
    // Whatever arrives within a second: the parts, or the one stream.
    let collect = async {
        loop {
            tokio::select! {
                d = conn.read_datagram() => datagrams.push(d.unwrap().to_vec()),
                s = conn.accept_uni() => streams.push(s.unwrap().read_to_end(1 << 20).await.unwrap()),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), collect).await;
    (datagrams, streams)
}

#[tokio::test]
async fn gossip_goes_in_parts_only_to_a_site_that_negotiated_them() {
    let ca = ClusterCa::generate().unwrap();
    let a = site(&ca, "a");

    // A site of the build before (`cairn/2`): a 2,500-byte message as a few datagrams (two
    // once path-MTU discovery has raised the datagram size, three on a connection this
    // young, still at QUIC's 1,200 bytes), kind 2, one message id, parts 0.. of their
    // count, the message's bytes split between them.
    let current = raw_site_server(&ca, &[b"cairn/2", b"cairn/1"]);
    let (mut datagrams, streams) = gossip_as_seen_by(&current, &a, vec![7; 2_500]).await;
    assert!(streams.is_empty(), "no stream for a message of a few datagrams");
    datagrams.sort_by_key(|d| d.get(5).copied());
    let count = datagrams.len();
    assert!((2..=3).contains(&count), "{:?}", datagrams.iter().map(Vec::len).collect::<Vec<_>>());
    let mut message = Vec::new();
    for (index, d) in datagrams.iter().enumerate() {
        assert!(d.len() <= 1_200, "a part fits the smallest QUIC datagram");
        assert_eq!(d[0], 2, "the part kind");
        assert_eq!(d[1..5], datagrams[0][1..5], "one message id");
        assert_eq!((usize::from(d[5]), usize::from(d[6])), (index, count), "index and count");
        message.extend_from_slice(&d[7..]);
    }
    assert_eq!(message, vec![7; 2_500]);

    // A site of an earlier build (`cairn/1` only) cannot put parts together: it gets the
    // same message whole, on a stream (kind 1, then one frame).
    let earlier = raw_site_server(&ca, &[b"cairn/1"]);
    let (datagrams, streams) = gossip_as_seen_by(&earlier, &a, vec![7; 2_500]).await;
    assert!(datagrams.is_empty(), "{} datagrams to a cairn/1 site", datagrams.len());
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0][0], 1, "the gossip stream kind");
    let mut frame = &streams[0][1..];
    let payload = frame::read_frame(&mut frame, 1 << 20).await.unwrap().unwrap();
    assert_eq!(payload, vec![7; 2_500]);
}

#[tokio::test]
async fn gossip_goes_compressed_only_to_a_site_that_negotiated_it() {
    let ca = ClusterCa::generate().unwrap();
    let a = site(&ca, "a");
    // Something like a digest: 100 sites' ids and counters, 5,500 bytes.
    let message: Vec<u8> = (0..100u32)
        .flat_map(|i| {
            let mut entry = format!("{:032x}", u128::from(i).wrapping_mul(0x9E37_79B9)).into_bytes();
            entry.extend([4, 127, 0, 0, 1, 0x1B, 0x58 + i as u8]);
            entry.extend(u64::from(i * 13).to_le_bytes());
            entry.extend(u64::from(i * 7).to_le_bytes());
            entry
        })
        .collect();
    assert_eq!(message.len(), 5_500);
    // A site of this build (`cairn/3`): a zstd frame of the message, far smaller than
    // the 5,500 bytes that would need a stream: one datagram (kind 1), or two parts on a
    // connection this young, whose datagrams are still QUIC's 1,200 bytes; encoding 1.
    let current = raw_site_server(&ca, &[b"cairn/3", b"cairn/2", b"cairn/1"]);
    let (mut datagrams, streams) = gossip_as_seen_by(&current, &a, message.clone()).await;
    assert!(streams.is_empty());
    let packed: Vec<u8> = match datagrams.len() {
        1 if datagrams[0][0] == 1 => datagrams[0][1..].to_vec(),
        2 if datagrams.iter().all(|d| d[0] == 2) => {
            datagrams.sort_by_key(|d| d[5]);
            datagrams.iter().flat_map(|d| d[7..].to_vec()).collect()
        }
        _ => panic!("{:?}", datagrams.iter().map(Vec::len).collect::<Vec<_>>()),
    };
    assert_eq!(packed[0], 1, "compressed");
    assert!(packed.len() < 2_000, "{} bytes", packed.len());
    assert_eq!(zstd::bulk::decompress(&packed[1..], 5_500).unwrap(), message);

    // A site of the build before (`cairn/2`) gets it as it is: more than four datagrams'
    // worth, so on a stream.
    let before = raw_site_server(&ca, &[b"cairn/2", b"cairn/1"]);
    let (datagrams, streams) = gossip_as_seen_by(&before, &a, message.clone()).await;
    assert!(datagrams.is_empty());
    assert_eq!(streams.len(), 1);
    let mut frame = &streams[0][1..];
    assert_eq!(frame::read_frame(&mut frame, 1 << 20).await.unwrap().unwrap(), message);
}
