//! Talking to a running site from the CLI: the operator's (or any issued) credentials
//! and one endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_transport::operator::DbChange;
use cairn_transport::{Credentials, Endpoint, Request, Response, Signer, TransportConfig};
use clap::Args;

use crate::cli::addr::parse_addr;

/// Which site to talk to, as whom, and how patiently.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// The site to talk to.
    #[arg(long, global = true, value_name = "HOST:PORT", env = "CAIRN_NODE", default_value = "127.0.0.1:7001", value_parser = parse_addr)]
    pub(crate) node: SocketAddr,
    /// Credentials to ask with (ca.pem, cert.pem, key.pem), as `cairn cluster issue-cert`
    /// or `cluster init` wrote them; what they may ask depends on the identity they name.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CAIRN_CREDENTIALS",
        default_value = "./cairn-data/cluster-operator"
    )]
    pub(crate) credentials: PathBuf,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) timeout: u64,
}

/// A CLI connection to one site.
#[derive(Debug)]
pub(crate) struct Client {
    endpoint: Endpoint,
    /// Signs db creations, changes and drops (sites take them only from an operator).
    signer: Signer,
    node: SocketAddr,
    timeout: Duration,
}

impl Client {
    /// Loads the operator's credentials and makes an endpoint (inside a runtime).
    pub(crate) fn new(args: &ConnArgs) -> anyhow::Result<Self> {
        let credentials = Credentials::load(&args.credentials).with_context(|| {
            format!(
                "loading credentials from {} (set --credentials or CAIRN_CREDENTIALS)",
                args.credentials.display()
            )
        })?;
        let config = TransportConfig {
            connect_timeout: Duration::from_secs(args.timeout.min(30)),
            request_timeout: Duration::from_secs(args.timeout),
            ..TransportConfig::default()
        };
        Ok(Self {
            signer: credentials.signer()?,
            endpoint: Endpoint::client(&credentials, config, args.node)?,
            node: args.node,
            timeout: Duration::from_secs(args.timeout),
        })
    }

    /// Signs with these credentials' key (sites take seals only from an operator).
    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }

    /// An order, sealed with these credentials' key, that `site` drain (or stop).
    pub(crate) fn drain_order(&self, site: cairn_inventory::SiteId, on: bool) -> Request {
        let mut order =
            cairn_inventory::DrainOrder { site, on, at_ms: cairn_inventory::now_ms(), seal: None };
        order.seal = Some(self.signer.seal_drain(&order));
        Request::SetDraining { order }
    }

    /// The site's address.
    pub(crate) fn node(&self) -> SocketAddr {
        self.node
    }

    /// The endpoint, for requests whose errors the caller tells apart.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How long one request may take (`--timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request. Errors say what to do about them where we can tell.
    pub(crate) async fn request(&self, request: &Request) -> anyhow::Result<Response> {
        self.request_at(self.node, request).await
    }

    /// Creates, changes or drops a db at the node: the node prepares the record, this
    /// client checks and seals it, the node writes it (see `cairn_transport::operator`).
    pub(crate) async fn change_db(&self, change: &DbChange) -> anyhow::Result<Response> {
        let result =
            cairn_transport::operator::change_db(&self.endpoint, self.node, &self.signer, change).await;
        result.map_err(|error| self.explain(error))
    }

    /// Sends one request to another site of the cluster (one the node named).
    pub(crate) async fn request_at(&self, node: SocketAddr, request: &Request) -> anyhow::Result<Response> {
        self.endpoint.request(node, request).await.map_err(|error| self.explain(error))
    }

    fn explain(&self, error: cairn_transport::TransportError) -> anyhow::Error {
        {
            let text = error.to_string();
            let hint = if text.contains("certificate") {
                "; the site and these credentials are not of the same cluster (check --credentials / CAIRN_CREDENTIALS)"
            } else if text.contains("no handshake within") || text.contains("unreachable") {
                "; is a site running there? (check --node / CAIRN_NODE)"
            } else {
                ""
            };
            anyhow::anyhow!("{text}{hint}")
        }
    }

    /// Closes the connection politely, waiting at most a moment for the site to hear.
    pub(crate) async fn close(self) {
        self.endpoint.close_within(Duration::from_millis(200)).await;
    }
}

/// Runs `f` with a client on a small runtime.
pub(crate) fn with_client<T>(
    args: &ConnArgs,
    f: impl AsyncFnOnce(&Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::new(args)?;
        let result = f(&client).await;
        client.close().await;
        result
    })
}
