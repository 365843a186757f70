//! What one holder (a site, the CLI, an application) presents and trusts: the cluster
//! CA's certificate, its own certificate with the identity in it, and its private key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_types::ClusterId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::authority::{ClusterCa, IssuedCert};
use super::files::{io_err, read_private, write_atomic};
use super::identity::{CertificateFacts, Identity};
use super::signing::{ClusterTrust, Signer};
use super::{ALPN_PROTOCOLS, CA_CERT, CERT, KEY, cluster_id_of};
use crate::error::TransportError;

type Result<T, E = TransportError> = std::result::Result<T, E>;

/// Writes a credentials dir: `ca.pem`, `cert.pem` and `key.pem` (owner-only), each
/// atomically.
pub fn write_credentials(dir: &Path, ca: &ClusterCa, issued: &IssuedCert) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_atomic(&dir.join(KEY), &issued.key_pem, true)?;
    write_atomic(&dir.join(CERT), &issued.cert_pem, false)?;
    write_atomic(&dir.join(CA_CERT), ca.cert_pem(), false)
}

/// What one holder presents and trusts.
#[derive(Debug)]
pub struct Credentials {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    facts: CertificateFacts,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            facts: self.facts.clone(),
        }
    }
}

impl Credentials {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from a credentials dir. The key must be
    /// owner-only, and the certificate must name an identity.
    pub fn load(dir: &Path) -> Result<Self> {
        let pem_err = |path: PathBuf| move |e| TransportError::Tls(format!("{}: {e}", path.display()));
        let ca_path = dir.join(CA_CERT);
        let ca = CertificateDer::from_pem_file(&ca_path).map_err(pem_err(ca_path.clone()))?;
        let cert_path = dir.join(CERT);
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .map_err(pem_err(cert_path.clone()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(cert_path.clone()))?;
        let Some(leaf) = chain.first() else {
            return Err(TransportError::Tls(format!("{}: no certificate in it", cert_path.display())));
        };
        let facts = CertificateFacts::read(leaf)
            .map_err(|e| TransportError::Tls(format!("{}: {e}", cert_path.display())))?;
        let key_path = dir.join(KEY);
        let key =
            PrivateKeyDer::from_pem_slice(read_private(&key_path)?.as_bytes()).map_err(pem_err(key_path))?;
        Ok(Self { ca, chain, key, facts })
    }

    /// Credentials from PEM text.
    pub fn from_pem(ca_pem: &str, issued: &IssuedCert) -> Result<Self> {
        let err = |what: &'static str| move |e| TransportError::Tls(format!("{what}: {e}"));
        let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).map_err(err("certificate"))?;
        let facts =
            CertificateFacts::read(&leaf).map_err(|e| TransportError::Tls(format!("certificate: {e}")))?;
        Ok(Self {
            ca: CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(err("CA certificate"))?,
            chain: vec![leaf],
            key: PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(err("private key"))?,
            facts,
        })
    }

    /// Who these credentials speak for.
    pub fn identity(&self) -> &Identity {
        &self.facts.identity
    }

    /// A signer with this holder's key, carrying its certificate.
    pub fn signer(&self) -> Result<Signer> {
        let Some(leaf) = self.chain.first() else {
            return Err(TransportError::Tls("no certificate to sign with".into()));
        };
        Signer::new(&self.key, leaf.clone(), self.facts.identity.clone())
    }

    /// Checks other holders' certificates against this holder's cluster CA.
    pub fn trust(&self) -> Result<ClusterTrust> {
        ClusterTrust::new(&self.ca)
    }

    /// When the certificate stops being valid, seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.facts.not_after_unix
    }

    /// The key a site signs its QUIC stateless resets with: derived from its private
    /// key, so the same across restarts and known to nobody else.
    pub(crate) fn reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.derive(b"cairn/stateless-reset/v1"))
    }

    /// The key a site's connection ids are hashed with (so that after a restart it
    /// still recognises its own ids, and resets their connections): derived like
    /// [`Self::reset_key`].
    pub(crate) fn connection_id_key(&self) -> u64 {
        let bytes = self.derive(b"cairn/connection-id/v1");
        u64::from_le_bytes(bytes[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }

    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(purpose);
        context.update(self.key.secret_der());
        context.finish().as_ref().try_into().expect("a SHA-256 digest has 32 bytes")
    }

    /// The cluster these credentials belong to.
    pub fn cluster_id(&self) -> ClusterId {
        cluster_id_of(&self.ca)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| TransportError::Tls(format!("CA certificate: {e}")))?;
        Ok(Arc::new(roots))
    }

    /// TLS 1.3, client certificate required and checked against the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| TransportError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("own certificate: {e}")))?;
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The HTTPS server side of the HTTP gateway: this holder's certificate, ALPN
    /// `http/1.1`, and a client certificate of the cluster taken when presented but not
    /// required (a bearer token may stand in for it).
    pub fn http_server_config(&self) -> Result<rustls::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TransportError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("own certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// TLS 1.3, server checked against the cluster CA (only a site's certificate names
    /// the server name), our certificate presented.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("own certificate: {e}")))?;
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}
