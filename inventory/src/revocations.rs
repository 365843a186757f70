//! The cluster's revocation list: certificates and identities an operator has revoked,
//! as one list the operator signs whole (a CRL). Sites keep the newest list they have
//! seen (by `issued_ms`), gossip it, refuse revoked peers in the handshake and leave
//! them out of the view. Checking the seal and matching certificates is the
//! transport's job; here are the values, bounded on decode, and where they are stored.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::records::OperatorSeal;
use crate::store::{Inventory, get_record, put_record};

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

    fn try_from(raw: RawRevoked) -> std::result::Result<Self, String> {
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

    fn try_from(raw: RawList) -> std::result::Result<Self, String> {
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
    pub fn with(&self, entry: Revoked, issued_ms: u64) -> std::result::Result<Self, String> {
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

const REVOCATIONS_KEY: &[u8] = b"revocations";

impl Inventory {
    /// The newest revocation list this site has taken (checked by whoever stored it).
    pub fn revocations(&self) -> Result<Option<RevocationList>> {
        self.read(|txn| get_record(self.tables.meta, txn, REVOCATIONS_KEY, "meta[revocations]"))
    }

    /// Stores `list` if it is newer than the one stored; answers whether it was.
    pub fn put_revocations(&self, list: &RevocationList) -> Result<bool> {
        self.write(|txn| {
            let current: Option<RevocationList> =
                get_record(self.tables.meta, txn, REVOCATIONS_KEY, "meta[revocations]")?;
            if current.is_some_and(|c| c.issued_ms >= list.issued_ms) {
                return Ok(false);
            }
            put_record(self.tables.meta, txn, REVOCATIONS_KEY, list, "revocations")?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterId, InventoryConfig};

    #[test]
    fn only_a_newer_list_replaces_the_stored_one_and_long_lists_do_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::open(dir.path(), ClusterId::random(), InventoryConfig::default()).unwrap();
        assert_eq!(inv.revocations().unwrap(), None);
        let empty = RevocationList { issued_ms: 0, entries: Vec::new(), seal: None };
        let one = empty.with(Revoked::Identity("cairn://site/x".into()), 10).unwrap();
        assert!(inv.put_revocations(&one).unwrap());
        assert!(!inv.put_revocations(&empty).unwrap(), "an older list is not taken");
        let two = one.with(Revoked::Certificate([7; 32]), 5).unwrap();
        assert_eq!(two.issued_ms, 11, "always after the list it extends");
        assert!(inv.put_revocations(&two).unwrap());
        assert_eq!(inv.revocations().unwrap(), Some(two));
        let long = RevocationList {
            issued_ms: 1,
            entries: (0..=MAX_REVOKED).map(|i| Revoked::Identity(format!("cairn://client/c{i}"))).collect(),
            seal: None,
        };
        let bytes = crate::codec::encode(&long).unwrap();
        assert!(crate::codec::decode::<RevocationList>(&bytes).is_err());
        let wide = Revoked::Identity("x".repeat(MAX_REVOKED_URI + 1));
        assert!(crate::codec::decode::<Revoked>(&crate::codec::encode(&wide).unwrap()).is_err());
    }
}
