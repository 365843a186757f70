//! The cluster's certificate authority and each holder's credentials (mutual TLS).
//!
//! A cluster dir holds the CA (`ca.pem`, `ca.key`) and, beside it, the operator's
//! credentials (`cert.pem`, `key.pem`), so the CLI can use it directly. An issued
//! credentials dir holds `ca.pem`, `cert.pem` and `key.pem`. Every certificate carries the
//! DNS name [`SERVER_NAME`], which clients ask for, so any holder of a certificate signed
//! by the cluster CA is a member; the cluster id is derived from the CA certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_inventory::ClusterId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::TransportError;

/// The ALPN protocol every cairn connection negotiates.
pub const ALPN: &[u8] = b"cairn/1";
/// The DNS name in every cluster certificate, and the one clients verify.
pub const SERVER_NAME: &str = "cairn";
/// Certificate file names.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (only in a cluster dir).
pub const CA_KEY: &str = "ca.key";
/// A holder's certificate.
pub const CERT: &str = "cert.pem";
/// A holder's private key.
pub const KEY: &str = "key.pem";
/// The name the operator's credentials in a cluster dir are issued for.
pub const OPERATOR_NAME: &str = "operator";
/// Default validity of issued certificates.
pub const DEFAULT_VALID_DAYS: u32 = 825;

const CA_NAME: &str = "cairn cluster CA";

type Result<T, E = TransportError> = std::result::Result<T, E>;

fn tls_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> TransportError {
    let what = what.into();
    move |e| TransportError::Tls(format!("{what}: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io { path: path.to_owned(), source }
}

/// The parameters the CA is made from. Deterministic, so that an issuer can be rebuilt
/// from the stored key alone (its subject and key identifier come out the same).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// A cluster's certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("cluster_id", &self.cluster_id()).finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh key, valid for 20 years.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate().map_err(tls_err("generating the CA key"))?;
        let mut params = ca_params();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(20 * 365);
        let cert = params.self_signed(&key).map_err(tls_err("signing the CA certificate"))?;
        Ok(Self { cert_pem: cert.pem(), key })
    }

    /// Loads the CA of a cluster dir.
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_pem = read_text(&dir.join(CA_CERT))?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read_text(&key_path)?)
            .map_err(|e| TransportError::Tls(format!("{}: not a private key: {e}", key_path.display())))?;
        Ok(Self { cert_pem, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The id of the cluster this CA defines.
    pub fn cluster_id(&self) -> ClusterId {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map(|der| cluster_id_of(&der))
            .unwrap_or(ClusterId(0))
    }

    /// Issues a certificate for `name` (a site or an operator), valid from now for `days`.
    pub fn issue(&self, name: &str, days: u32) -> Result<IssuedCert> {
        let now = SystemTime::now();
        self.issue_valid_between(
            name,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(u64::from(days) * 86_400),
        )
    }

    /// Issues a certificate for `name` valid between two instants (an expired one too,
    /// for testing that peers refuse it).
    pub fn issue_valid_between(
        &self,
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert> {
        check_name(name)?;
        let key = KeyPair::generate().map_err(tls_err("generating a key"))?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(tls_err("certificate parameters"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert =
            params.signed_by(&key, &issuer).map_err(tls_err(format!("signing a certificate for {name}")))?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.pem` and `ca.key` (owner-only) into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_file(&dir.join(CA_CERT), &self.cert_pem, false)?;
        write_file(&dir.join(CA_KEY), &self.key.serialize_pem(), true)
    }
}

/// Creates a cluster dir: a new CA and operator credentials. Refuses a dir that already
/// has a CA key, so a cluster's CA is never overwritten by mistake.
pub fn init_cluster_dir(dir: &Path) -> Result<ClusterId> {
    if dir.join(CA_KEY).exists() {
        return Err(TransportError::Tls(format!(
            "{} already holds a cluster CA; use another dir or the existing cluster",
            dir.display()
        )));
    }
    let ca = ClusterCa::generate()?;
    ca.write_to(dir)?;
    write_credentials(dir, &ca, &ca.issue(OPERATOR_NAME, DEFAULT_VALID_DAYS)?)?;
    Ok(ca.cluster_id())
}

/// Issues credentials for `name` from the CA in `cluster_dir` into `out`
/// (`ca.pem`, `cert.pem`, `key.pem`).
pub fn issue_to_dir(cluster_dir: &Path, name: &str, out: &Path, days: u32) -> Result<PathBuf> {
    let ca = ClusterCa::load(cluster_dir)?;
    let issued = ca.issue(name, days)?;
    write_credentials(out, &ca, &issued)?;
    Ok(out.to_owned())
}

/// Writes a credentials dir.
pub fn write_credentials(dir: &Path, ca: &ClusterCa, issued: &IssuedCert) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_file(&dir.join(CA_CERT), ca.cert_pem(), false)?;
    write_file(&dir.join(CERT), &issued.cert_pem, false)?;
    write_file(&dir.join(KEY), &issued.key_pem, true)
}

/// The cluster id a CA certificate defines: the first 16 bytes of its SHA-256.
pub fn cluster_id_of(ca: &CertificateDer<'_>) -> ClusterId {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca.as_ref());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    ClusterId(u128::from_be_bytes(id))
}

/// What one holder (a site or the CLI) presents and trusts.
#[derive(Debug)]
pub struct Credentials {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self { ca: self.ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Credentials {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from a credentials (or cluster) dir.
    pub fn load(dir: &Path) -> Result<Self> {
        let pem_err = |path: PathBuf| move |e| TransportError::Tls(format!("{}: {e}", path.display()));
        let ca_path = dir.join(CA_CERT);
        let ca = CertificateDer::from_pem_file(&ca_path).map_err(pem_err(ca_path.clone()))?;
        let cert_path = dir.join(CERT);
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .map_err(pem_err(cert_path.clone()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(cert_path.clone()))?;
        if chain.is_empty() {
            return Err(TransportError::Tls(format!("{}: no certificate in it", cert_path.display())));
        }
        let key_path = dir.join(KEY);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(pem_err(key_path))?;
        Ok(Self { ca, chain, key })
    }

    /// Credentials from PEM text.
    pub fn from_pem(ca_pem: &str, issued: &IssuedCert) -> Result<Self> {
        let err = |what: &'static str| move |e| TransportError::Tls(format!("{what}: {e}"));
        Ok(Self {
            ca: CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(err("CA certificate"))?,
            chain: vec![
                CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).map_err(err("certificate"))?,
            ],
            key: PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(err("private key"))?,
        })
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
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS 1.3, server checked against the cluster CA, our certificate presented.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("own certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TransportError::Tls(format!("invalid certificate name {name:?}: use 1-64 of A-Z a-z 0-9 - _ .")))
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))
}
