//! `transport`: request round trips and bulk stream throughput over cairn's QUIC
//! transport, against a raw TCP loopback copy of the same bytes in the same run.
//!
//! - Round trips: `Status` requests through `Endpoint::request`, one at a time over one
//!   connection, and 16 connections at once; baseline: the same request frames echoed
//!   over plain TCP (one connection, one at a time), so the ratio shows what QUIC + TLS +
//!   our framing cost per request.
//! - Bulk: one stream of `bulk_bytes` through quinn configured exactly as a site's
//!   endpoint (our TLS, our windows); baseline: one tokio TCP stream of the same bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cairn_inventory::{ClusterId, Role, SiteId};
use cairn_transport::tls::{ClusterCa, SERVER_NAME};
use cairn_transport::{Credentials, Endpoint, Request, Response, Service, SiteStatus, TransportConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::{Measurement, Reporter, median};

const CHUNK: usize = 256 << 10;

struct Params {
    requests: usize,
    connections: usize,
    bulk_bytes: usize,
    repeats: usize,
}

impl Params {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self { requests: 2_000, connections: 16, bulk_bytes: 64 << 20, repeats: 3 }
        } else {
            Self { requests: 20_000, connections: 16, bulk_bytes: 1 << 30, repeats: 3 }
        }
    }
}

struct StatusOnly;

impl Service for StatusOnly {
    async fn handle(&self, _peer: cairn_transport::Peer, _request: Request) -> Response {
        Response::Status(SiteStatus {
            site_id: SiteId(1),
            cluster_id: ClusterId(1),
            version: "bench".into(),
            store_format: 1,
            uptime_ms: 0,
            role: Role::Core,
            data: Default::default(),
            retention: Default::default(),
            certificate_expires_ms: 0,
        })
    }

    async fn pull(
        &self,
        _peer: cairn_transport::Peer,
        _request: cairn_transport::PullRequest,
        mut out: cairn_transport::PullSender,
    ) {
        let _ = out.send(&cairn_transport::PullFrame::Refused { reason: "bench site".into() }).await;
        out.finish();
    }
}

/// Credentials of a site with a fresh id (the bench's endpoints serve and ask as sites).
fn creds(ca: &ClusterCa) -> anyhow::Result<Credentials> {
    let site = cairn_transport::Identity::Site(SiteId::random());
    Ok(Credentials::from_pem(ca.cert_pem(), &ca.issue(&site, 1)?)?)
}

/// Requests per second, `per_conn` sequential requests on each of `clients`.
async fn quic_round_trips(ca: &ClusterCa, clients: usize, per_conn: usize) -> anyhow::Result<f64> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let (server, _gossip) =
        Endpoint::serve(loopback, &creds(ca)?, TransportConfig::default(), Arc::new(StatusOnly))?;
    let addr = server.local_addr();
    let mut endpoints = Vec::new();
    for _ in 0..clients {
        let e = Endpoint::client(&creds(ca)?, TransportConfig::default(), addr)?;
        e.request(addr, &Request::Status).await?; // connect outside the timing
        endpoints.push(e);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for e in endpoints {
        tasks.spawn(async move {
            for _ in 0..per_conn {
                e.request(addr, &Request::Status).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let rate = (clients * per_conn) as f64 / start.elapsed().as_secs_f64();
    server.close().await;
    Ok(rate)
}

/// Requests per second of the same frames echoed over one plain TCP connection.
async fn tcp_round_trips(n: usize) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let request = cairn_inventory::codec::encode(&Request::Status)?;
    let response = cairn_inventory::codec::encode(
        &StatusOnly
            .handle(
                cairn_transport::Peer { addr, identity: cairn_transport::Identity::Site(SiteId(1)) },
                Request::Status,
            )
            .await,
    )?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; request.len() + 5];
        let mut out = cairn_transport::frame::header(response.len())?.to_vec();
        out.extend_from_slice(&response);
        for _ in 0..n {
            s.read_exact(&mut buf).await?;
            s.write_all(&out).await?;
        }
        anyhow::Ok(())
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let request = cairn_inventory::codec::encode(&Request::Status)?;
    let mut frame = cairn_transport::frame::header(request.len())?.to_vec();
    frame.extend_from_slice(&request);
    let start = Instant::now();
    for _ in 0..n {
        c.write_all(&frame).await?;
        cairn_transport::frame::read_frame(&mut c, 1 << 20).await?.context("no answer")?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.await??;
    Ok(rate)
}

/// MB/s of one quinn stream, configured as a site's endpoint.
async fn quic_bulk(ca: &ClusterCa, bytes: usize) -> anyhow::Result<f64> {
    let config = TransportConfig::default();
    let server_creds = creds(ca)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_creds.server_config()?)?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    server_config.transport_config(Arc::new(config.quinn_transport()?));
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = std::net::UdpSocket::bind(local)?;
    let server =
        quinn::Endpoint::new(config.quinn_endpoint()?, Some(server_config), socket, runtime.clone())?;
    let addr = server.local_addr()?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let mut recv = conn.accept_uni().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        while let Some(n) = recv.read(&mut buf).await? {
            total += n;
        }
        anyhow::Ok(total)
    });
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(creds(ca)?.client_config()?)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(Arc::new(config.quinn_transport()?));
    let socket = std::net::UdpSocket::bind(local)?;
    let mut client = quinn::Endpoint::new(config.quinn_endpoint()?, None, socket, runtime)?;
    client.set_default_client_config(client_config);
    let conn = client.connect(addr, SERVER_NAME)?.await?;
    let chunk = vec![7u8; CHUNK];
    let start = Instant::now();
    let mut send = conn.open_uni().await?;
    let mut sent = 0;
    while sent < bytes {
        send.write_all(&chunk).await?;
        sent += CHUNK;
    }
    send.finish()?;
    let received = receiver.await??;
    let mbps = received as f64 / 1e6 / start.elapsed().as_secs_f64();
    anyhow::ensure!(received == sent, "received {received} of {sent} bytes");
    conn.close(0u32.into(), b"done");
    Ok(mbps)
}

/// MB/s of one tokio TCP stream on loopback.
pub(crate) async fn tcp_bulk(bytes: usize) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        anyhow::Ok(total)
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let chunk = vec![7u8; CHUNK];
    let start = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        c.write_all(&chunk).await?;
        sent += CHUNK;
    }
    c.shutdown().await?;
    let received = receiver.await??;
    anyhow::ensure!(received == sent, "received {received} of {sent} bytes");
    Ok(received as f64 / 1e6 / start.elapsed().as_secs_f64())
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let p = Params::new(smoke);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let ca = ClusterCa::generate()?;
        let (mut tcp_rt, mut one, mut many, mut tcp_bytes, mut quic_bytes) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..p.repeats {
            tcp_rt.push(tcp_round_trips(p.requests).await?);
            one.push(quic_round_trips(&ca, 1, p.requests).await?);
            many.push(quic_round_trips(&ca, p.connections, p.requests / p.connections).await?);
            tcp_bytes.push(tcp_bulk(p.bulk_bytes).await?);
            quic_bytes.push(quic_bulk(&ca, p.bulk_bytes).await?);
        }
        let params = json!({
            "requests": p.requests, "connections": p.connections, "bulk_bytes": p.bulk_bytes,
            "repeats": p.repeats, "chunk": CHUNK, "transport": format!("{:?}", TransportConfig::default()),
        });
        let tcp = median(&tcp_rt);
        for (name, runs, aim) in
            [("round trips, 1 connection", &one, None), ("round trips, 16 connections", &many, None)]
        {
            let ours = median(runs);
            reporter.record(&Measurement {
                scenario: "transport",
                name: name.into(),
                unit: "requests/s",
                ours,
                baseline_name: "TCP echo, 1 conn".into(),
                baseline: tcp,
                ratio: ours / tcp,
                aim,
                params: params.clone(),
                runs: json!({ "ours": runs, "baseline": tcp_rt }),
            })?;
        }
        let (ours, tcp) = (median(&quic_bytes), median(&tcp_bytes));
        reporter.record(&Measurement {
            scenario: "transport",
            name: "bulk stream".into(),
            unit: "MB/s",
            ours,
            baseline_name: "raw TCP copy".into(),
            baseline: tcp,
            ratio: ours / tcp,
            aim: None,
            params,
            runs: json!({ "ours": quic_bytes, "baseline": tcp_bytes }),
        })
    })
}
