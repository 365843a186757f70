//! The HTTP/JSON gateway (`cairn start --http-listen HOST:PORT`): HTTPS with the site's
//! certificate, for applications that do not link `cairn-client`.
//!
//! Who asks is known from a client certificate of the cluster (the same identities as
//! on QUIC) or a bearer token the operator minted (`cairn cluster issue-token`); no
//! credential is a 401, and the site's access table decides the rest (a 403 names the
//! identity and the request). Data requests go through `cairn-client` over the site's
//! own endpoint, so the gateway reaches every shard wherever it is held.
//!
//! - [`api`]: the routes, their handlers and the JSON they speak;
//! - [`body`]: response bodies, whole or streamed (NDJSON subscriptions).

mod api;
mod body;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_transport::{Endpoint, Identity};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use api::ROUTES;

use crate::credentials::ServingCertificate;

/// Connections served at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's listening socket (bound before the site starts, so a taken port
/// fails the start).
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
}

/// What the handlers work with.
#[derive(Debug)]
pub struct Gateway {
    /// Sends data requests to the sites holding each shard.
    pub client: cairn_client::Client,
    /// The site's view (for `/v1/cluster`).
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The site's certificate: the HTTPS config and the cluster CA (tokens).
    pub certificate: Arc<ServingCertificate>,
    /// The site's endpoint (its revocation list).
    pub endpoint: Endpoint,
}

impl HttpServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, gateway: Arc<Gateway>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let _slot = slot;
                serve_connection(gateway, tcp, peer).await;
            });
        }
    }
}

/// One connection: the TLS handshake, the identity its certificate names (if any), then
/// HTTP/1.1 requests.
async fn serve_connection(gateway: Arc<Gateway>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let acceptor = tokio_rustls::TlsAcceptor::from(gateway.certificate.http_config());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "http: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let certificate = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first().cloned());
    let by_certificate = certificate.map(|leaf| match gateway.endpoint.revoked().revokes(leaf.as_ref()) {
        Some(why) => Err(why),
        None => Identity::of_certificate(&leaf).map_err(|e| e.to_string()),
    });
    let by_certificate = Arc::new(by_certificate);
    let service = hyper::service::service_fn(move |request| {
        let (gateway, by_certificate) = (gateway.clone(), by_certificate.clone());
        async move { Ok::<_, std::convert::Infallible>(api::handle(&gateway, request, &by_certificate).await) }
    });
    let io = hyper_util::rt::TokioIo::new(tls);
    if let Err(error) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
        tracing::debug!(%peer, %error, "http connection ended");
    }
}
