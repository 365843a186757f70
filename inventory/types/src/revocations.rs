//! The cluster's revocation list: certificates and identities an operator has revoked,
//! as one list the operator signs whole (a CRL). Checking the seal and matching
//! certificates is the transport's job; here are the values, bounded on decode.

use serde::{Deserialize, Serialize};

use crate::records::OperatorSeal;

/// Most entries a list holds: it travels whole in one gossip value.
pub const MAX_REVOKED: usize = 256;
/// Longest identity URI an entry may name.
pub const MAX_REVOKED_URI: usize = 256;

/// What an entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawRevoked")]
pub enum Revoked {
    /// One certificate, by the SHA-256 of its DER encoding.
    Certificate([u8; 32]),
    /// Every certificate naming this identity (its URI, e.g. `cairn://site/<id>`).
    Identity(String),
}

#[derive(Deserialize)]
enum RawRevoked {
    Certificate([u8; 32]),
    Identity(String),
}

impl TryFrom<RawRevoked> for Revoked {
    type Error = String;

    fn try_from(raw: RawRevoked) -> Result<Self, String> {
        match raw {
            RawRevoked::Certificate(hash) => Ok(Self::Certificate(hash)),
            RawRevoked::Identity(uri) if uri.len() <= MAX_REVOKED_URI => Ok(Self::Identity(uri)),
            RawRevoked::Identity(uri) => {
                Err(format!("a revoked identity of {} bytes is too long", uri.len()))
            }
        }
    }
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Certificate(hash) => {
                write!(f, "certificate sha256:")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Identity(uri) => f.write_str(uri),
        }
    }
}

/// The revocation list an operator signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawList")]
pub struct RevocationList {
    /// When the operator made it (ms since the Unix epoch): the newest list wins.
    pub issued_ms: u64,
    /// What it revokes (at most [`MAX_REVOKED`]).
    pub entries: Vec<Revoked>,
    /// The operator's signature of [`Self::signed_bytes`].
    pub seal: Option<OperatorSeal>,
}

#[derive(Deserialize)]
struct RawList {
    issued_ms: u64,
    entries: Vec<Revoked>,
    seal: Option<OperatorSeal>,
}

impl TryFrom<RawList> for RevocationList {
    type Error = String;

    fn try_from(raw: RawList) -> Result<Self, String> {
        if raw.entries.len() > MAX_REVOKED {
            return Err(format!(
                "a revocation list of {} entries (at most {MAX_REVOKED})",
                raw.entries.len()
            ));
        }
        Ok(Self { issued_ms: raw.issued_ms, entries: raw.entries, seal: raw.seal })
    }
}

impl RevocationList {
    /// The bytes the operator signs: everything but the seal, after a domain tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        crate::codec::encode(&("cairn revocation list v1", self.issued_ms, &self.entries)).unwrap_or_default()
    }

    /// This list with `entry` added (once), issued at `issued_ms` (after this one's),
    /// unsealed; an error when the list is full.
    pub fn with(&self, entry: Revoked, issued_ms: u64) -> Result<Self, String> {
        let mut entries = self.entries.clone();
        if !entries.contains(&entry) {
            if entries.len() >= MAX_REVOKED {
                return Err(format!("the revocation list is full ({MAX_REVOKED} entries)"));
            }
            entries.push(entry);
        }
        Ok(Self { issued_ms: issued_ms.max(self.issued_ms + 1), entries, seal: None })
    }
}
