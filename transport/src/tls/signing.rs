//! Signatures made with a holder's certificate key, and checked against certificates
//! of the cluster: what lets a site sign what it gossips (and an operator what it
//! orders) so that nobody else can say it in its name.
//!
//! A [`Signer`] is made from [`Credentials`](super::Credentials); a [`ClusterTrust`]
//! from the cluster CA's certificate. [`ClusterTrust::member`] accepts a site's or a
//! replicant's certificate (it must chain to the CA, be valid at the time given and
//! carry the server name, as only those two kinds do) and answers a [`VerifyingKey`]
//! that names its identity. Keys are ECDSA P-256 (the only kind the cluster CA issues);
//! signatures are the fixed 64-byte form. Nothing here reads a clock or a file: the
//! time is an argument, so callers in pure code can pass theirs.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use cairn_types::{DbRecord, DrainOrder, OperatorSeal, RevocationList, Revoked};

use super::SERVER_NAME;
use super::identity::{CertificateFacts, Identity};
use crate::error::TransportError;

/// Signs bytes with a holder's private key; carries the certificate that proves whose
/// key it is.
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    certificate: CertificateDer<'static>,
    identity: Identity,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Signer {
    pub(super) fn new(
        key: &PrivateKeyDer<'_>,
        certificate: CertificateDer<'static>,
        identity: Identity,
    ) -> Result<Self, TransportError> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(TransportError::Tls("the private key is not PKCS#8; issue a new certificate".into()));
        };
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| TransportError::Tls(format!("the private key is not an ECDSA P-256 key: {e}")))?;
        Ok(Self { key, certificate, identity })
    }

    /// A signature of `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self.key.sign(&ring::rand::SystemRandom::new(), message) {
            Ok(signature) => signature.as_ref().to_vec(),
            // ring fails only when the system's random source does; an empty signature
            // then checks nowhere, which is what such a value deserves.
            Err(_) => Vec::new(),
        }
    }

    /// Seals `record`: this holder's signature of it, with its certificate. Only an
    /// operator's seal is taken by sites ([`ClusterTrust::check_seal`]).
    pub fn seal(&self, record: &DbRecord) -> OperatorSeal {
        OperatorSeal { certificate: self.certificate.to_vec(), signature: self.sign(&record.signed_bytes()) }
    }

    /// Seals a drain order (sites take only an operator's).
    pub fn seal_drain(&self, order: &DrainOrder) -> OperatorSeal {
        OperatorSeal { certificate: self.certificate.to_vec(), signature: self.sign(&order.signed_bytes()) }
    }

    /// Seals a revocation list (sites take only an operator's).
    pub fn seal_revocations(&self, list: &RevocationList) -> OperatorSeal {
        OperatorSeal { certificate: self.certificate.to_vec(), signature: self.sign(&list.signed_bytes()) }
    }

    /// The certificate (DER) whose key signs.
    pub fn certificate(&self) -> &[u8] {
        self.certificate.as_ref()
    }

    /// Who signs.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// A public key taken from a certificate that [`ClusterTrust`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    identity: Identity,
    public_key: Vec<u8>,
    not_after_unix: i64,
    fingerprint: [u8; 32],
}

impl VerifyingKey {
    /// Who the certificate names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// When the certificate stops being valid (seconds since the Unix epoch).
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }

    /// The SHA-256 of the certificate ([`fingerprint`]).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(message, signature)
            .is_ok()
    }
}

/// Checks certificates against the cluster CA.
#[derive(Clone)]
pub struct ClusterTrust {
    servers: Arc<WebPkiServerVerifier>,
    clients: Arc<dyn ClientCertVerifier>,
    /// The CA's own public key (it signs bearer tokens).
    ca_key: Vec<u8>,
}

impl std::fmt::Debug for ClusterTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTrust").finish_non_exhaustive()
    }
}

impl ClusterTrust {
    /// Trust in the CA whose certificate is `ca`.
    pub fn new(ca: &CertificateDer<'_>) -> Result<Self, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| TransportError::Tls(format!("CA certificate: {e}")))?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TransportError::Tls(format!("certificate verifier: {e}")))?;
        let clients = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TransportError::Tls(format!("certificate verifier: {e}")))?;
        let ca_key = Self::public_key(ca).map_err(TransportError::Tls)?;
        Ok(Self { servers, clients, ca_key })
    }

    /// Whether the CA's key signed `message` (ECDSA P-256, ASN.1 form, as rcgen signs).
    pub(super) fn ca_signed(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &self.ca_key)
            .verify(message, signature)
            .is_ok()
    }

    fn public_key(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
        Ok(parsed.public_key().subject_public_key.data.to_vec())
    }

    /// The key of a site's or replicant's certificate (DER), if it chains to the
    /// cluster CA and is valid at `now_ms` (ms since the Unix epoch); else why not.
    pub fn member(&self, der: &[u8], now_ms: u64) -> Result<VerifyingKey, String> {
        let cert = CertificateDer::from(der);
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        self.servers
            .verify_server_cert(&cert, &[], &name, &[], unix_time(now_ms))
            .map_err(|e| format!("the certificate is not a member's of this cluster: {e}"))?;
        let key = Self::key_of(&cert)?;
        match key.identity {
            Identity::Site(_) | Identity::Replicant(_) => Ok(key),
            ref other => Err(format!("the certificate names {other}, not a site or replicant")),
        }
    }

    /// The key of an operator's certificate (DER), if it chains to the cluster CA and
    /// is valid at `now_ms`; else why not.
    pub fn operator(&self, der: &[u8], now_ms: u64) -> Result<VerifyingKey, String> {
        let cert = CertificateDer::from(der);
        self.clients
            .verify_client_cert(&cert, &[], unix_time(now_ms))
            .map_err(|e| format!("the certificate is not one of this cluster: {e}"))?;
        let key = Self::key_of(&cert)?;
        match key.identity {
            Identity::Operator(_) => Ok(key),
            ref other => Err(format!("the certificate names {other}, not an operator")),
        }
    }

    /// Whether `record` carries an operator's seal: a certificate of this cluster that
    /// names an operator, was not expired when the record was made (its `changed` time —
    /// so records outlive the certificate that sealed them, but an expired key cannot
    /// make new ones), and its signature of the record. `now_ms` is the time to check
    /// the chain at (or the certificate's last valid moment, if earlier). Answers the
    /// operator's identity, or why the seal does not check.
    pub fn check_seal(&self, record: &DbRecord, now_ms: u64) -> Result<Identity, String> {
        self.check_operator_seal(record.seal.as_ref(), record.changed.wall_ms, &record.signed_bytes(), now_ms)
    }

    /// Whether a revocation list carries an operator's seal, as [`Self::check_seal`]
    /// says of a db record (made at its `issued_ms`).
    pub fn check_revocations(&self, list: &RevocationList, now_ms: u64) -> Result<Identity, String> {
        self.check_operator_seal(list.seal.as_ref(), list.issued_ms, &list.signed_bytes(), now_ms)
    }

    /// Whether a drain order carries an operator's seal, as [`Self::check_seal`] says of
    /// a db record (made at its `at_ms`).
    pub fn check_drain(&self, order: &DrainOrder, now_ms: u64) -> Result<Identity, String> {
        self.check_operator_seal(order.seal.as_ref(), order.at_ms, &order.signed_bytes(), now_ms)
    }

    fn check_operator_seal(
        &self,
        seal: Option<&OperatorSeal>,
        made_ms: u64,
        signed: &[u8],
        now_ms: u64,
    ) -> Result<Identity, String> {
        let Some(seal) = seal else {
            return Err("no operator sealed it".into());
        };
        let facts = CertificateFacts::read(&CertificateDer::from(seal.certificate.as_slice()))
            .map_err(|e| format!("the seal's certificate: {e}"))?;
        let last_valid_ms = u64::try_from(facts.not_after_unix).unwrap_or(0).saturating_mul(1000);
        if made_ms > last_valid_ms {
            return Err(format!("it was made after the certificate of {} expired", facts.identity));
        }
        let key = self.operator(&seal.certificate, now_ms.min(last_valid_ms.saturating_sub(1000)))?;
        if key.verifies(signed, &seal.signature) {
            Ok(key.identity)
        } else {
            Err(format!("the seal of {} does not check: it is not what was signed", key.identity))
        }
    }

    fn key_of(cert: &CertificateDer<'_>) -> Result<VerifyingKey, String> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let facts = CertificateFacts::read(cert).map_err(|e| e.to_string())?;
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
        let spki = parsed.public_key();
        // id-ecPublicKey with the prime256v1 curve: what the cluster CA issues.
        let ec = spki.algorithm.algorithm.to_id_string() == "1.2.840.10045.2.1";
        let p256 = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid.to_id_string() == "1.2.840.10045.3.1.7");
        if !(ec && p256) {
            return Err("the certificate's key is not ECDSA P-256".into());
        }
        Ok(VerifyingKey {
            identity: facts.identity,
            public_key: spki.subject_public_key.data.to_vec(),
            not_after_unix: facts.not_after_unix,
            fingerprint: fingerprint(cert.as_ref()),
        })
    }
}

/// What a revocation list revokes, ready to match certificates against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedSet {
    issued_ms: u64,
    certificates: std::collections::HashSet<[u8; 32]>,
    identities: std::collections::HashSet<String>,
}

impl RevokedSet {
    /// The entries of `list` (whose seal the caller checked).
    pub fn new(list: &RevocationList) -> Self {
        let mut set = Self { issued_ms: list.issued_ms, ..Self::default() };
        for entry in &list.entries {
            match entry {
                Revoked::Certificate(hash) => set.certificates.insert(*hash),
                Revoked::Identity(uri) => set.identities.insert(uri.clone()),
            };
        }
        set
    }

    /// When the list was issued (0: nothing revoked yet).
    pub fn issued_ms(&self) -> u64 {
        self.issued_ms
    }

    /// Why `identity` is revoked, if it is (a bearer token naming it is refused).
    pub fn revokes_identity(&self, identity: &Identity) -> Option<String> {
        let uri = identity.uri();
        self.identities.contains(&uri).then(|| format!("{uri} was revoked"))
    }

    /// Why the certificate behind `key` is revoked, if it is.
    pub fn revokes_key(&self, key: &VerifyingKey) -> Option<String> {
        if self.certificates.contains(&key.fingerprint) {
            return Some(format!("its certificate ({}) was revoked", Revoked::Certificate(key.fingerprint)));
        }
        let identity = key.identity.uri();
        self.identities.contains(&identity).then(|| format!("{identity} was revoked"))
    }

    /// Whether the set revokes nothing (then no certificate needs looking at).
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty() && self.identities.is_empty()
    }

    /// Why the certificate `der` is revoked, if it is: by its hash, or by the identity
    /// it names.
    pub fn revokes(&self, der: &[u8]) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let hash = fingerprint(der);
        if self.certificates.contains(&hash) {
            return Some(format!("its certificate ({}) was revoked", Revoked::Certificate(hash)));
        }
        let identity = Identity::of_certificate(&CertificateDer::from(der)).ok()?.uri();
        self.identities.contains(&identity).then(|| format!("{identity} was revoked"))
    }
}

/// The SHA-256 of a certificate's DER encoding: how a revocation names one certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

fn unix_time(now_ms: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_millis(now_ms))
}

#[cfg(test)]
mod tests {
    use super::super::{ClusterCa, Credentials, PrincipalName};
    use super::*;
    use cairn_types::SiteId;

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    fn holder(ca: &ClusterCa, identity: Identity) -> Credentials {
        Credentials::from_pem(ca.cert_pem(), &ca.issue(&identity, 1).unwrap()).unwrap()
    }

    #[test]
    fn a_members_signature_checks_against_its_certificate_only() {
        let ca = ClusterCa::generate().unwrap();
        let trust = holder(&ca, Identity::Site(SiteId(1))).trust().unwrap();
        let site = holder(&ca, Identity::Site(SiteId(7))).signer().unwrap();
        let key = trust.member(site.certificate(), now_ms()).unwrap();
        assert_eq!(key.identity(), &Identity::Site(SiteId(7)));
        let signature = site.sign(b"hello");
        assert_eq!(signature.len(), 64);
        assert!(key.verifies(b"hello", &signature));
        assert!(!key.verifies(b"hellO", &signature));
        let other = holder(&ca, Identity::Replicant(SiteId(8))).signer().unwrap();
        assert!(!key.verifies(b"hello", &other.sign(b"hello")));
    }

    #[test]
    fn certificates_of_another_cluster_kind_or_time_are_refused() {
        let ca = ClusterCa::generate().unwrap();
        let trust = holder(&ca, Identity::Site(SiteId(1))).trust().unwrap();
        let stranger = ClusterCa::generate().unwrap();
        let foreign = holder(&stranger, Identity::Site(SiteId(7))).signer().unwrap();
        assert!(trust.member(foreign.certificate(), now_ms()).is_err());
        let operator = holder(&ca, Identity::Operator(PrincipalName::new("ops").unwrap())).signer().unwrap();
        assert!(trust.member(operator.certificate(), now_ms()).is_err(), "an operator cannot gossip");
        assert!(trust.operator(operator.certificate(), now_ms()).is_ok());
        let site = holder(&ca, Identity::Site(SiteId(7))).signer().unwrap();
        assert!(trust.operator(site.certificate(), now_ms()).is_err(), "a site is no operator");
        let in_a_week = now_ms() + 7 * 86_400_000;
        assert!(trust.member(site.certificate(), in_a_week).unwrap_err().contains("expired"));
        assert!(trust.member(b"not a certificate", now_ms()).is_err());
    }

    #[test]
    fn only_an_operators_seal_of_the_very_record_checks() {
        use cairn_types::{DbName, DbSettings, Hlc, Retention};
        let ca = ClusterCa::generate().unwrap();
        let trust = holder(&ca, Identity::Site(SiteId(1))).trust().unwrap();
        let operator = holder(&ca, Identity::Operator(PrincipalName::new("ops").unwrap())).signer().unwrap();
        let settings = DbSettings::new(4, 2, Retention::default()).unwrap();
        let mut record =
            DbRecord::new(DbName::new("d").unwrap(), settings, Hlc { wall_ms: 1_000, logical: 0 }, SiteId(1));
        assert!(trust.check_seal(&record, now_ms()).unwrap_err().contains("no operator"));
        record.seal = Some(operator.seal(&record));
        assert_eq!(
            trust.check_seal(&record, now_ms()),
            Ok(Identity::Operator(PrincipalName::new("ops").unwrap()))
        );
        // Checked long after the certificate expired: still the operator's.
        assert!(trust.check_seal(&record, now_ms() + 3 * 86_400_000).is_ok());
        // Anything else changed: not what was signed.
        let mut dropped = record.clone();
        dropped.dropped = true;
        assert!(trust.check_seal(&dropped, now_ms()).unwrap_err().contains("not what was signed"));
        // Made after the certificate expired.
        let mut late = record.clone();
        late.changed = Hlc { wall_ms: now_ms() + 3 * 86_400_000, logical: 0 };
        late.seal = Some(operator.seal(&late));
        assert!(trust.check_seal(&late, now_ms()).unwrap_err().contains("expired"));
        // A site's seal, and another cluster's operator's.
        let site = holder(&ca, Identity::Site(SiteId(7))).signer().unwrap();
        record.seal = Some(site.seal(&record));
        assert!(trust.check_seal(&record, now_ms()).unwrap_err().contains("not an operator"));
        let stranger = ClusterCa::generate().unwrap();
        let foreign =
            holder(&stranger, Identity::Operator(PrincipalName::new("ops").unwrap())).signer().unwrap();
        record.seal = Some(foreign.seal(&record));
        assert!(trust.check_seal(&record, now_ms()).is_err());
    }
}
