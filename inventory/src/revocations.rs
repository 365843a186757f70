//! Where a site keeps the cluster's revocation list (its values are in
//! `cairn_types::revocations`): certificates and identities an operator has revoked,
//! as one list the operator signs whole (a CRL). Sites keep the newest list they have
//! seen (by `issued_ms`), gossip it, refuse revoked peers in the handshake and leave
//! them out of the view. Checking the seal and matching certificates is the
//! transport's job; here are the values, bounded on decode, and where they are stored.

use cairn_types::RevocationList;

use crate::error::Result;
use crate::store::{Inventory, get_record, put_record};

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
    use crate::{ClusterId, InventoryConfig, MAX_REVOKED, MAX_REVOKED_URI, Revoked};

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
