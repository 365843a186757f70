//! Bearer tokens for the HTTP gateway: an identity the cluster CA signed, valid until
//! a time. The operator mints one with `cairn cluster issue-token` (which reads the CA
//! key); sites check it with the CA certificate they already hold, so no site needs a
//! secret. A token is `ct1.<claims>.<signature>`, both parts URL-safe base64 without
//! padding; the claims are the codec's encoding of the identity URI and two times.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::SigningKey;
use serde::{Deserialize, Serialize};

use super::authority::ClusterCa;
use super::identity::Identity;
use super::signing::ClusterTrust;
use crate::error::TransportError;

const PREFIX: &str = "ct1.";
/// Longest token taken in (a header is bounded anyway; this is the decode's bound).
pub const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    domain: String,
    identity: String,
    issued_ms: u64,
    expires_ms: u64,
}

const DOMAIN: &str = "cairn bearer token v1";

impl ClusterCa {
    /// A token naming `identity`, valid from `now_ms` for `days`.
    pub fn issue_token(&self, identity: &Identity, now_ms: u64, days: u32) -> Result<String, TransportError> {
        let claims = Claims {
            domain: DOMAIN.into(),
            identity: identity.uri(),
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(u64::from(days) * 86_400_000),
        };
        let bytes = cairn_types::codec::encode(&claims)?;
        let signature =
            self.key().sign(&bytes).map_err(|e| TransportError::Tls(format!("signing a token: {e}")))?;
        Ok(format!("{PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(bytes), URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl ClusterTrust {
    /// The identity a token names, if the cluster CA signed it and it is valid at
    /// `now_ms`; else why not.
    pub fn check_token(&self, token: &str, now_ms: u64) -> Result<Identity, String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(format!("a token of {} bytes is too long", token.len()));
        }
        let body = token.strip_prefix(PREFIX).ok_or("not a cairn token (it starts with ct1.)")?;
        let (claims, signature) = body.split_once('.').ok_or("not a cairn token: claims.signature")?;
        let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| "the token's claims are not base64")?;
        let signature =
            URL_SAFE_NO_PAD.decode(signature).map_err(|_| "the token's signature is not base64")?;
        if !self.ca_signed(&claims, &signature) {
            return Err("the token is not signed by this cluster's CA".into());
        }
        let claims: Claims =
            cairn_types::codec::decode(&claims).map_err(|e| format!("the token's claims: {e}"))?;
        if claims.domain != DOMAIN {
            return Err("not a bearer token".into());
        }
        if now_ms >= claims.expires_ms {
            return Err("the token has expired".into());
        }
        claims.identity.parse().map_err(|e| format!("the token's identity: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Credentials, PrincipalName};
    use cairn_types::SiteId;

    #[test]
    fn a_token_checks_only_against_its_cluster_and_until_it_expires() {
        let ca = ClusterCa::generate().unwrap();
        let trust = Credentials::from_pem(ca.cert_pem(), &ca.issue(&Identity::Site(SiteId(1)), 1).unwrap())
            .unwrap()
            .trust()
            .unwrap();
        let app = Identity::Client(PrincipalName::new("app").unwrap());
        let token = ca.issue_token(&app, 1_000, 1).unwrap();
        assert_eq!(trust.check_token(&token, 2_000), Ok(app));
        assert!(trust.check_token(&token, 1_000 + 86_400_000).unwrap_err().contains("expired"));
        let stranger = ClusterCa::generate().unwrap();
        let foreign =
            stranger.issue_token(&Identity::Operator(PrincipalName::new("x").unwrap()), 1_000, 1).unwrap();
        assert!(trust.check_token(&foreign, 2_000).unwrap_err().contains("not signed"));
        let mut tampered = token.clone();
        tampered.insert(10, 'A');
        assert!(trust.check_token(&tampered, 2_000).is_err());
        for junk in ["", "ct1.", "ct1.a.b", "Bearer x", &"A".repeat(5000)] {
            assert!(trust.check_token(junk, 2_000).is_err(), "{junk}");
        }
    }
}
