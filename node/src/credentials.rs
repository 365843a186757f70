//! A site's certificate: issued into its data dir by the operator (`cairn cluster
//! issue-cert --site|--replicant --data-dir DIR`, or `cairn local` for its own sites),
//! naming the site id of the inventory there; loaded and checked by `cairn start`,
//! which never reads the CA's key.

use std::path::{Path, PathBuf};

use cairn_inventory::{Inventory, InventoryConfig, InventoryError, Role, SiteId};
use cairn_transport::TransportError;
use cairn_transport::tls::{self, ClusterCa, Credentials, Identity};

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
/// site id it names.
pub fn issue_site(
    ca: &ClusterCa,
    data_dir: &Path,
    role: Role,
    days: u32,
) -> Result<SiteId, CredentialsError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| InventoryError::Io { path: data_dir.to_owned(), source })?;
    let site = Inventory::open(data_dir, ca.cluster_id(), InventoryConfig::default())?.identity().site_id;
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
