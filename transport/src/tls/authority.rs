//! The cluster's certificate authority: made once by `cairn cluster init`, kept by the
//! operator, and used only to issue certificates (sites never read its key).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cairn_types::ClusterId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::files::{read_private, read_text, write_atomic};
use super::identity::Identity;
use super::{CA_CERT, CA_KEY, SERVER_NAME, cluster_id_of};
use crate::error::TransportError;

type Result<T, E = TransportError> = std::result::Result<T, E>;

const CA_NAME: &str = "cairn cluster CA";

fn tls_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> TransportError {
    let what = what.into();
    move |e| TransportError::Tls(format!("{what}: {e}"))
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
    /// The CA's key (it signs certificates and bearer tokens).
    pub(super) fn key(&self) -> &KeyPair {
        &self.key
    }

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

    /// Loads the CA of a cluster dir (`ca.pem`, and `ca.key`, which must be owner-only).
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_pem = read_text(&dir.join(CA_CERT))?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read_private(&key_path)?)
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

    /// Issues a certificate for `identity`, valid from now for `days`.
    pub fn issue(&self, identity: &Identity, days: u32) -> Result<IssuedCert> {
        let now = SystemTime::now();
        self.issue_valid_between(
            identity,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(u64::from(days) * 86_400),
        )
    }

    /// Issues a certificate for `identity` valid between two instants (an expired one
    /// too, for testing that peers refuse it).
    ///
    /// Every certificate carries its identity as a SAN URI and may authenticate a client;
    /// only a site's (core or replicant) also carries the DNS name [`SERVER_NAME`] and may
    /// serve, so an operator's or an application's certificate cannot pose as a site.
    pub fn issue_valid_between(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate().map_err(tls_err("generating a key"))?;
        let mut params = CertificateParams::default();
        let uri = identity.uri().try_into().map_err(tls_err("the identity URI"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if identity.is_site() {
            let dns = SERVER_NAME.try_into().map_err(tls_err("the server name"))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
            // So HTTP clients on the site's own host can check the gateway by a usual
            // name (`https://localhost:PORT`, `https://127.0.0.1:PORT`).
            let localhost = "localhost".try_into().map_err(tls_err("localhost"))?;
            params.subject_alt_names.push(SanType::DnsName(localhost));
            params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.distinguished_name.push(DnType::CommonName, identity.to_string());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(tls_err(format!("signing a certificate for {identity}")))?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.pem` and `ca.key` (owner-only) into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(super::files::io_err(dir))?;
        write_atomic(&dir.join(CA_CERT), &self.cert_pem, false)?;
        write_atomic(&dir.join(CA_KEY), &self.key.serialize_pem(), true)
    }
}

/// Where `cairn cluster init --out DIR` puts the operator's credentials: beside the CA,
/// never in its dir (`DIR-operator`).
pub fn operator_dir_beside(ca_dir: &Path) -> PathBuf {
    let name =
        ca_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "cluster".into());
    ca_dir.with_file_name(format!("{name}-operator"))
}
