//! The cluster's certificate authority, identities, and each holder's credentials
//! (mutual TLS).
//!
//! A CA dir (`cairn cluster init --out DIR`) holds `ca.pem` and `ca.key`; only the
//! operator's commands that issue certificates read the key. A credentials dir holds
//! `ca.pem`, `cert.pem` and `key.pem`: a site's lives in `<data-dir>/tls`, an operator's
//! or an application's wherever `issue-cert --out` put it (the operator's first one
//! beside the CA dir, see [`operator_dir_beside`]). Every certificate names one
//! [`Identity`] as a SAN URI; a site's certificate also carries the DNS name
//! [`SERVER_NAME`], which clients verify, so only sites can serve. The cluster id is
//! derived from the CA certificate.

mod authority;
mod credentials;
mod files;
mod identity;
mod signing;
mod tokens;

use cairn_types::ClusterId;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};

pub use authority::{ClusterCa, IssuedCert, operator_dir_beside};
pub use credentials::{Credentials, write_credentials};
pub use identity::{CertificateFacts, Identity, IdentityError, PrincipalName};
pub use tokens::MAX_TOKEN_LEN;
/// rustls's server config, as the HTTP gateway serves with it.
pub type HttpServerConfig = rustls::ServerConfig;
pub use signing::{ClusterTrust, RevokedSet, Signer, VerifyingKey, fingerprint};

use crate::error::TransportError;

/// The ALPN protocols a cairn connection offers, newest first. `cairn/2` adds gossip
/// messages cut into a few datagrams; `cairn/3` adds gossip messages compressed by the
/// transport. A site of an earlier version offers only `cairn/2` or `cairn/1` and gets
/// every gossip message in a form it reads.
pub const ALPN_PROTOCOLS: [&[u8]; 3] = [ALPN_GOSSIP_PACKED, ALPN_GOSSIP_PARTS, b"cairn/1"];
/// The ALPN protocol under which gossip messages may come in parts.
pub const ALPN_GOSSIP_PARTS: &[u8] = b"cairn/2";
/// The ALPN protocol under which gossip messages also come packed (compressed).
pub const ALPN_GOSSIP_PACKED: &[u8] = b"cairn/3";
/// The DNS name in every site certificate, and the one clients verify.
pub const SERVER_NAME: &str = "cairn";
/// Certificate file names.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (only in a CA dir).
pub const CA_KEY: &str = "ca.key";
/// A holder's certificate.
pub const CERT: &str = "cert.pem";
/// A holder's private key.
pub const KEY: &str = "key.pem";
/// The name the operator's first credentials are issued for.
pub const OPERATOR_NAME: &str = "operator";
/// Default validity of issued certificates.
pub const DEFAULT_VALID_DAYS: u32 = 825;

/// Creates a CA dir (a new CA) and the operator's credentials beside it (see
/// [`operator_dir_beside`]). Refuses a dir that already has a CA key, so a cluster's CA
/// is never overwritten by mistake. Returns the cluster id and the operator's dir.
pub fn init_cluster_dir(dir: &Path) -> Result<(ClusterId, PathBuf), TransportError> {
    if dir.join(CA_KEY).exists() {
        return Err(TransportError::Tls(format!(
            "{} already holds a cluster CA; use another dir or the existing cluster",
            dir.display()
        )));
    }
    let ca = ClusterCa::generate()?;
    ca.write_to(dir)?;
    let operator = operator_dir_beside(dir);
    let name = PrincipalName::new(OPERATOR_NAME).map_err(|e| TransportError::Tls(e.to_string()))?;
    write_credentials(&operator, &ca, &ca.issue(&Identity::Operator(name), DEFAULT_VALID_DAYS)?)?;
    Ok((ca.cluster_id(), operator))
}

/// Issues credentials for `identity` from the CA in `ca_dir` into `out`.
pub fn issue_to_dir(ca_dir: &Path, identity: &Identity, out: &Path, days: u32) -> Result<(), TransportError> {
    let ca = ClusterCa::load(ca_dir)?;
    write_credentials(out, &ca, &ca.issue(identity, days)?)
}

/// The first certificate of a PEM file, DER-encoded (to revoke it, say).
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, TransportError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path)
        .map(|der| der.as_ref().to_vec())
        .map_err(|e| TransportError::Tls(format!("{}: not a PEM certificate: {e}", path.display())))
}

/// The cluster id a CA certificate defines: the first 16 bytes of its SHA-256.
pub fn cluster_id_of(ca: &CertificateDer<'_>) -> ClusterId {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca.as_ref());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    ClusterId(u128::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::SiteId;

    #[test]
    fn issued_certificates_name_their_identity() {
        let ca = ClusterCa::generate().unwrap();
        for identity in [
            Identity::Site(SiteId(42)),
            Identity::Replicant(SiteId(43)),
            Identity::Client(PrincipalName::new("app").unwrap()),
        ] {
            let credentials = Credentials::from_pem(ca.cert_pem(), &ca.issue(&identity, 1).unwrap()).unwrap();
            assert_eq!(credentials.identity(), &identity);
            let in_a_day = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
            let secs = in_a_day.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            assert!((credentials.not_after_unix() - secs).abs() < 5);
        }
    }

    #[test]
    fn init_keeps_the_operator_outside_the_ca_dir() {
        let root = tempfile::tempdir().unwrap();
        let ca_dir = root.path().join("ca");
        let (cluster, operator) = init_cluster_dir(&ca_dir).unwrap();
        assert_eq!(operator, root.path().join("ca-operator"));
        let credentials = Credentials::load(&operator).unwrap();
        assert_eq!(credentials.cluster_id(), cluster);
        assert!(matches!(credentials.identity(), Identity::Operator(name) if name.as_str() == "operator"));
        assert!(!ca_dir.join(CERT).exists() && !ca_dir.join(KEY).exists());
        assert!(init_cluster_dir(&ca_dir).is_err(), "a CA is never overwritten");
    }
}
