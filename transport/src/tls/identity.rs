//! Who a certificate speaks for: a core site, a replicant, an operator or a client.
//!
//! The identity is written into each issued certificate as one subject-alternative-name
//! URI (`cairn://site/<32 hex digits>`, `cairn://replicant/<id>`, `cairn://operator/<name>`,
//! `cairn://client/<name>`) and read back from the peer's certificate after every
//! handshake, so a request handler knows who asks, not only from where.

use std::fmt;
use std::str::FromStr;

use cairn_types::SiteId;
use rustls::pki_types::CertificateDer;

/// The URI scheme of identities.
const SCHEME: &str = "cairn://";

/// A person's or an application's name in a certificate: 1-64 of `A-Z a-z 0-9 - _ .`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrincipalName(String);

impl PrincipalName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(IdentityError::BadName(name.chars().take(80).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PrincipalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Who a certificate was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A core site: holds replicas, plans, gossips.
    Site(SiteId),
    /// A replicant site: gossips and follows dbs, holds no replicas.
    Replicant(SiteId),
    /// A person running the cluster: may do everything an operator request does.
    Operator(PrincipalName),
    /// An application: data-plane requests only (publish, read, streams).
    Client(PrincipalName),
}

impl Identity {
    /// The site id, for a core site or a replicant.
    pub fn site_id(&self) -> Option<SiteId> {
        match self {
            Self::Site(id) | Self::Replicant(id) => Some(*id),
            Self::Operator(_) | Self::Client(_) => None,
        }
    }

    /// Whether this identity is a site (core or replicant), which serves requests and
    /// gossips; operators and clients only ask.
    pub fn is_site(&self) -> bool {
        self.site_id().is_some()
    }

    /// The kind, as in the URI: `site`, `replicant`, `operator` or `client`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Site(_) => "site",
            Self::Replicant(_) => "replicant",
            Self::Operator(_) => "operator",
            Self::Client(_) => "client",
        }
    }

    /// The URI written into the certificate.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{self}")
    }

    /// Reads the identity out of a certificate (DER): its one `cairn://` SAN URI.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        Ok(CertificateFacts::read(der)?.identity)
    }
}

/// `kind/value`, as in the URI without its scheme; site ids shown in full.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Site(id) | Self::Replicant(id) => write!(f, "{}/{id}", self.kind()),
            Self::Operator(name) | Self::Client(name) => write!(f, "{}/{name}", self.kind()),
        }
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses `cairn://kind/value` (or `kind/value`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadUri(text.chars().take(120).collect());
        let rest = text.strip_prefix(SCHEME).unwrap_or(text);
        let (kind, value) = rest.split_once('/').ok_or_else(bad)?;
        let site = || value.parse::<SiteId>().map_err(|_| bad());
        match kind {
            "site" => Ok(Self::Site(site()?)),
            "replicant" => Ok(Self::Replicant(site()?)),
            "operator" => Ok(Self::Operator(PrincipalName::new(value)?)),
            "client" => Ok(Self::Client(PrincipalName::new(value)?)),
            _ => Err(bad()),
        }
    }
}

/// What a site reads out of a certificate: its identity and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Who it speaks for.
    pub identity: Identity,
    /// The end of its validity, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl CertificateFacts {
    /// Parses a certificate (DER). The chain is not checked here: TLS did that.
    pub fn read(der: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san =
            cert.subject_alternative_name().map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        let identity = match uris.as_slice() {
            [] => return Err(IdentityError::NoIdentity),
            [one] => one.parse()?,
            _ => return Err(IdentityError::SeveralIdentities(uris.len())),
        };
        Ok(Self { identity, not_after_unix: cert.validity().not_after.timestamp() })
    }
}

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a parsable X.509 certificate.
    #[error("not a readable certificate: {0}")]
    BadCertificate(String),
    /// No `cairn://` URI in its subject alternative names (issued before identities).
    #[error(
        "the certificate names no cairn identity (issued by an older cairn?): issue a new one with `cairn cluster issue-cert`"
    )]
    NoIdentity,
    /// More than one `cairn://` URI.
    #[error("the certificate names {0} cairn identities; exactly one is allowed")]
    SeveralIdentities(usize),
    /// A `cairn://` URI that is not `site|replicant/<32 hex>` or `operator|client/<name>`.
    #[error(
        "invalid identity {0:?}: use cairn://site/<id>, replicant/<id>, operator/<name> or client/<name>"
    )]
    BadUri(String),
    /// A name out of its rules.
    #[error("invalid name {0:?}: use 1-64 of A-Z a-z 0-9 - _ .")]
    BadName(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uris_round_trip() {
        for identity in [
            Identity::Site(SiteId(7)),
            Identity::Replicant(SiteId(u128::MAX)),
            Identity::Operator(PrincipalName::new("ops-1").unwrap()),
            Identity::Client(PrincipalName::new("app.orders_2").unwrap()),
        ] {
            assert_eq!(identity.uri().parse::<Identity>().unwrap(), identity);
        }
    }

    #[test]
    fn bad_uris_are_named() {
        for bad in ["cairn://", "cairn://site/12", "cairn://root/x", "cairn://client/", "cairn://client/a b"]
        {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_certificate_without_a_cairn_uri_names_no_identity() {
        let plain = rcgen::generate_simple_self_signed(vec!["cairn".to_owned()]).unwrap();
        let error = CertificateFacts::read(plain.cert.der()).unwrap_err();
        assert_eq!(error, IdentityError::NoIdentity);
        assert!(error.to_string().contains("cairn cluster issue-cert"));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errs(text in ".{0,100}") {
            let _ = text.parse::<Identity>();
        }

        #[test]
        fn any_bytes_as_a_certificate_err_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(CertificateFacts::read(&CertificateDer::from(bytes)).is_err());
        }
    }
}
