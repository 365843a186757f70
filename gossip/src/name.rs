//! The name a site gossips under: the high 64 bits of its site id, as 16 hex digits.
//!
//! Every gossip digest names every node it knows, and in an idle cluster digests are
//! nearly all gossip carries; a site id is 128 random bits, which no compression
//! shortens. Gossiping under half of it makes every digest entry about 8 bytes
//! smaller: a third less on the wire at 20 sites (measured with plain chitchat
//! processes, 14.7 against 10.3 KB/s per node).
//!
//! The name alone proves nothing and is not an identity: a node's site id is the one
//! its certificate names, which must be a site gossiping under this name (checked by
//! [`crate::signed::Verifier`]), and every value it publishes is signed over the full
//! id. Two sites sharing a name (a chance of about n² / 2⁶⁵ for n random ids) are
//! still two nodes of chitchat (their generations and addresses differ) and two sites
//! of the view.

use std::fmt;
use std::str::FromStr;

use cairn_inventory::{ClusterId, SiteId};

/// What a site's chitchat node id says: the high 64 bits of its site id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GossipName(u64);

/// A chitchat node id that is not a gossip name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a gossip name (16 hex digits)")]
pub struct NotAGossipName(String);

impl GossipName {
    /// The name `site` gossips under.
    pub fn of(site: SiteId) -> Self {
        Self((site.0 >> 64) as u64)
    }

    /// Whether `site` gossips under this name.
    pub fn names(self, site: SiteId) -> bool {
        Self::of(site) == self
    }

    /// All that the name says of a site id (its high 64 bits, the rest zero): what the
    /// view shows of a node whose certificate is not believed.
    pub fn partial_site_id(self) -> SiteId {
        SiteId(u128::from(self.0) << 64)
    }
}

/// What chitchat's syn messages carry as the cluster id: the high 64 bits of
/// `cluster`, as 16 hex digits. chitchat answers a peer of another cluster with
/// `BadCluster`; the cluster CA's mutual TLS already keeps such a peer out, so half the
/// id is enough for the check, and every syn is 16 bytes shorter.
pub fn cluster_tag(cluster: ClusterId) -> String {
    format!("{:016x}", cluster.0 >> 64)
}

impl fmt::Display for GossipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for GossipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipName({self})")
    }
}

impl FromStr for GossipName {
    type Err = NotAGossipName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NotAGossipName(s.chars().take(40).collect());
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u64::from_str_radix(s, 16).map(Self).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_name_is_the_high_half_of_the_id_and_reads_back(id in any::<u128>(), low in any::<u64>()) {
            let site = SiteId(id);
            let name = GossipName::of(site);
            let text = name.to_string();
            prop_assert_eq!(text.len(), 16);
            prop_assert_eq!(&text, &site.to_string()[..16]);
            prop_assert_eq!(text.parse::<GossipName>(), Ok(name));
            prop_assert!(name.names(SiteId((id >> 64 << 64) | u128::from(low))));
            prop_assert!(name.names(name.partial_site_id()));
        }

        #[test]
        fn any_other_text_is_refused(text in ".{0,40}") {
            prop_assume!(text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()));
            prop_assert!(text.parse::<GossipName>().is_err());
        }
    }

    #[test]
    fn a_full_site_id_is_not_a_name() {
        let site = SiteId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert!(site.to_string().parse::<GossipName>().is_err());
        assert!(!GossipName::of(site).names(SiteId(0x0123_4567_89ab_cdee_0011_2233_4455_6677)));
    }
}
