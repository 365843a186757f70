//! A running site: its inventory and its endpoint, started and stopped together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_inventory::{Inventory, InventoryConfig, Role};
use cairn_transport::tls::{self, ClusterCa, Credentials};
use cairn_transport::{Endpoint, GossipInbox, TransportConfig};

use crate::service::SiteService;

/// What a site needs to start.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// The site's data dir (its inventory, and its TLS credentials if self-issued).
    pub data_dir: PathBuf,
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// A credentials dir (`ca.pem`, `cert.pem`, `key.pem`) or a cluster dir with the CA key,
    /// from which the site issues itself credentials under `<data-dir>/tls`.
    pub cluster_dir: PathBuf,
    /// Core or replicant.
    pub role: Role,
    /// Inventory settings.
    pub inventory: InventoryConfig,
    /// Transport settings.
    pub transport: TransportConfig,
}

/// Why a site could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Credentials could not be found, made or loaded.
    #[error("credentials: {0}")]
    Credentials(#[source] cairn_transport::TransportError),
    /// The inventory could not be opened.
    #[error(transparent)]
    Inventory(#[from] cairn_inventory::InventoryError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Transport(cairn_transport::TransportError),
}

/// A started site. Dropping it does not stop the endpoint; call [`Site::shutdown`].
#[derive(Debug)]
pub struct Site {
    /// The site's inventory.
    pub inventory: Arc<Inventory>,
    /// The site's endpoint.
    pub endpoint: Endpoint,
    /// Gossip received (consumed by the gossip layer).
    pub gossip: GossipInbox,
}

/// The name a site's self-issued certificate carries.
const SITE_CERT_NAME: &str = "site";

/// Finds the site's credentials: a credentials dir is used as it is; a cluster dir that
/// holds the CA key makes the site issue itself credentials into `<data-dir>/tls` once.
pub fn resolve_credentials(
    cluster_dir: &Path,
    data_dir: &Path,
) -> Result<Credentials, cairn_transport::TransportError> {
    if !cluster_dir.join(tls::CA_KEY).exists() {
        return Credentials::load(cluster_dir);
    }
    let own = data_dir.join("tls");
    let ca = ClusterCa::load(cluster_dir)?;
    let current = Credentials::load(&own).ok().filter(|c| c.cluster_id() == ca.cluster_id());
    if let Some(credentials) = current {
        return Ok(credentials);
    }
    tracing::info!(dir = %own.display(), "issuing this site's certificate from the cluster CA");
    tls::write_credentials(&own, &ca, &ca.issue(SITE_CERT_NAME, tls::DEFAULT_VALID_DAYS)?)?;
    Credentials::load(&own)
}

impl Site {
    /// Opens the inventory (for the cluster the credentials name) and starts serving.
    /// Must be called inside a tokio runtime.
    pub fn start(options: SiteOptions) -> Result<Self, StartError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| {
            StartError::Inventory(cairn_inventory::InventoryError::Io {
                path: options.data_dir.clone(),
                source,
            })
        })?;
        let credentials =
            resolve_credentials(&options.cluster_dir, &options.data_dir).map_err(StartError::Credentials)?;
        let inventory =
            Arc::new(Inventory::open(&options.data_dir, credentials.cluster_id(), options.inventory)?);
        let service = Arc::new(SiteService::new(inventory.clone(), options.role));
        let (endpoint, gossip) = Endpoint::serve(options.listen, &credentials, options.transport, service)
            .map_err(StartError::Transport)?;
        let identity = inventory.identity();
        tracing::info!(
            site = %identity.site_id, cluster = %identity.cluster_id, addr = %endpoint.local_addr(),
            role = %options.role, "site started"
        );
        Ok(Self { inventory, endpoint, gossip })
    }

    /// Closes the endpoint (peers are told the site is leaving). The inventory closes
    /// when the last handle to it is dropped; every write was already committed.
    pub async fn shutdown(self) {
        self.endpoint.close().await;
        tracing::info!(site = %self.inventory.identity().site_id, "site stopped");
    }
}
