//! A site's certificate: issued into its data dir by the operator (`cairn cluster
//! issue-cert --site|--replicant --data-dir DIR`, or `cairn local` for its own sites),
//! naming the site id of the inventory there; loaded and checked by `cairn start`,
//! which never reads the CA's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_gossip::signed::SigningKeys;

use cairn_inventory::{Inventory, InventoryConfig, InventoryError, Role, SiteId};
use cairn_transport::tls::{self, ClusterCa, Credentials, HttpServerConfig, Identity};
use cairn_transport::{Endpoint, TransportError};

/// The dir under a data dir that holds the site's credentials.
pub const TLS_DIR: &str = "tls";

/// Where a site's credentials live.
pub fn site_credentials_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

/// Why a site's credentials could not be issued or used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// No certificate in the data dir.
    #[error(
        "no certificate in {dir}: the operator issues one with `cairn cluster issue-cert --cluster-dir CA_DIR \
         --{flag} --data-dir {data_dir}` (sites never read the CA key)"
    )]
    Missing {
        /// The credentials dir looked in.
        dir: PathBuf,
        /// `site` or `replicant`.
        flag: &'static str,
        /// The site's data dir.
        data_dir: PathBuf,
    },
    /// The credentials could not be read or made.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The inventory could not be opened (to learn or create the site id).
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The certificate is not a site's, or not this site's.
    #[error(
        "{}/tls: the certificate names {found}, but this site is {expected} (by its inventory and role): start \
         it with the role the certificate names, or issue it again with `cairn cluster issue-cert --cluster-dir \
         CA_DIR --{flag} --data-dir {}`",
        data_dir.display(),
        data_dir.display()
    )]
    WrongIdentity {
        /// What the certificate names.
        found: Identity,
        /// What the site is.
        expected: Identity,
        /// `site` or `replicant`.
        flag: &'static str,
        /// The site's data dir.
        data_dir: PathBuf,
    },
    /// A renewed certificate of another cluster's CA (it would cut the site off).
    #[error(
        "{}/tls: the renewed certificate is of cluster {found}, but this site serves cluster {expected}: issue          it with this cluster's CA",
        data_dir.display()
    )]
    OtherCluster {
        /// The renewed certificate's cluster.
        found: cairn_inventory::ClusterId,
        /// The site's cluster.
        expected: cairn_inventory::ClusterId,
        /// The site's data dir.
        data_dir: PathBuf,
    },
}

fn flag(role: Role) -> &'static str {
    match role {
        Role::Core => "site",
        Role::Replicant => "replicant",
    }
}

/// The identity a site of `role` with id `site` has.
pub fn site_identity(role: Role, site: SiteId) -> Identity {
    match role {
        Role::Core => Identity::Site(site),
        Role::Replicant => Identity::Replicant(site),
    }
}

/// Issues a certificate for the site of `data_dir` (its inventory created there, for the
/// CA's cluster, if there is none yet) and writes it into `<data-dir>/tls`. Returns the
/// site id it names. A running site holds its inventory locked: then the certificate is
/// renewed for the site id its current one names (the site loads the new one on SIGHUP
/// or `cairn ctl reload`).
pub fn issue_site(
    ca: &ClusterCa,
    data_dir: &Path,
    role: Role,
    days: u32,
) -> Result<SiteId, CredentialsError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| InventoryError::Io { path: data_dir.to_owned(), source })?;
    let site = match Inventory::open(data_dir, ca.cluster_id(), InventoryConfig::default()) {
        Ok(inventory) => inventory.identity().site_id,
        Err(locked @ InventoryError::Locked { .. }) => {
            let current = Credentials::load(&site_credentials_dir(data_dir)).ok();
            let of_this_cluster = current.filter(|c| c.cluster_id() == ca.cluster_id());
            match of_this_cluster.and_then(|c| c.identity().site_id()) {
                Some(site) => site,
                None => return Err(locked.into()),
            }
        }
        Err(error) => return Err(error.into()),
    };
    let issued = ca.issue(&site_identity(role, site), days)?;
    tls::write_credentials(&site_credentials_dir(data_dir), ca, &issued)?;
    Ok(site)
}

/// Loads the credentials of the site of `data_dir`, which runs as `role`.
pub fn load_site(data_dir: &Path, role: Role) -> Result<Credentials, CredentialsError> {
    let dir = site_credentials_dir(data_dir);
    if !dir.join(tls::CERT).exists() {
        return Err(CredentialsError::Missing { dir, flag: flag(role), data_dir: data_dir.to_owned() });
    }
    Ok(Credentials::load(&dir)?)
}

/// Checks that `credentials` name the site `site` running as `role`.
pub fn check_site(
    credentials: &Credentials,
    data_dir: &Path,
    role: Role,
    site: SiteId,
) -> Result<(), CredentialsError> {
    let expected = site_identity(role, site);
    if credentials.identity() == &expected {
        return Ok(());
    }
    Err(CredentialsError::WrongIdentity {
        found: credentials.identity().clone(),
        expected,
        flag: flag(role),
        data_dir: data_dir.to_owned(),
    })
}

/// [`issue_site`] with the CA of the CA dir `ca_dir` (valid [`tls::DEFAULT_VALID_DAYS`]):
/// for the operator's tools, and for tests and benches that run sites in one process.
pub fn issue_site_from_dir(ca_dir: &Path, data_dir: &Path, role: Role) -> Result<SiteId, CredentialsError> {
    issue_site(&ClusterCa::load(ca_dir)?, data_dir, role, tls::DEFAULT_VALID_DAYS)
}

/// The certificate a running site serves with: where it is loaded from, and until when
/// it is valid (read by the publisher, the metrics and `status`).
#[derive(Debug)]
pub struct ServingCertificate {
    data_dir: PathBuf,
    role: Role,
    site: SiteId,
    expires_ms: AtomicU64,
    signing: Arc<SigningKeys>,
    trust: cairn_transport::ClusterTrust,
    /// The cluster the site serves (its CA's id): a renewal must keep it.
    cluster: cairn_inventory::ClusterId,
    /// The HTTPS config of the HTTP gateway (replaced on reload).
    http: std::sync::RwLock<Arc<HttpServerConfig>>,
}

impl ServingCertificate {
    /// The certificate `credentials` hold, loaded from `data_dir` for `site` as `role`.
    pub fn new(
        data_dir: &Path,
        role: Role,
        site: SiteId,
        credentials: &Credentials,
    ) -> Result<Self, CredentialsError> {
        let expires_ms = AtomicU64::new(expiry_ms(credentials));
        let signing = Arc::new(SigningKeys::new(credentials.signer()?));
        let trust = credentials.trust()?;
        let cluster = credentials.cluster_id();
        let http = std::sync::RwLock::new(Arc::new(credentials.http_server_config()?));
        Ok(Self { data_dir: data_dir.to_owned(), role, site, expires_ms, signing, trust, cluster, http })
    }

    /// The cluster CA the certificate chains to: what peers' certificates, gossip and
    /// operators' seals are checked against (a renewal keeps the CA).
    pub fn trust(&self) -> &cairn_transport::ClusterTrust {
        &self.trust
    }

    /// The HTTPS config the HTTP gateway serves with now (replaced on reload).
    pub fn http_config(&self) -> Arc<HttpServerConfig> {
        self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The key the site signs its gossip with (replaced on reload).
    pub fn signing_keys(&self) -> Arc<SigningKeys> {
        self.signing.clone()
    }

    /// When it stops being valid (ms since the Unix epoch).
    pub fn expires_ms(&self) -> u64 {
        self.expires_ms.load(Ordering::Relaxed)
    }

    /// Loads the site's certificate and key again (renewed by the operator) and serves
    /// with them; a certificate that cannot be loaded or names another identity is
    /// refused and the endpoint keeps the one it has.
    pub fn reload(&self, endpoint: &Endpoint) -> Result<Credentials, CredentialsError> {
        let credentials = load_site(&self.data_dir, self.role)?;
        check_site(&credentials, &self.data_dir, self.role, self.site)?;
        if credentials.cluster_id() != self.cluster {
            return Err(CredentialsError::OtherCluster {
                found: credentials.cluster_id(),
                expected: self.cluster,
                data_dir: self.data_dir.clone(),
            });
        }
        let signer = credentials.signer()?;
        let http = credentials.http_server_config()?;
        endpoint.reload(&credentials)?;
        *self.http.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(http);
        self.signing.replace(signer);
        self.expires_ms.store(expiry_ms(&credentials), Ordering::Relaxed);
        tracing::info!(identity = %credentials.identity(), expires_ms = self.expires_ms(), "certificate reloaded");
        Ok(credentials)
    }
}

fn expiry_ms(credentials: &Credentials) -> u64 {
    u64::try_from(credentials.not_after_unix()).unwrap_or(0).saturating_mul(1000)
}
