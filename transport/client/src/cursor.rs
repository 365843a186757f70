//! Read positions as printable tokens.
//!
//! A [`Cursor`] holds, per shard, a position valid on every replica of that shard (per
//! origin site, the seq up to which every matching entry was seen). Its token is `c1.`
//! followed by the URL-safe base64 (no padding) of the codec encoding (version byte,
//! CRC32C) of the map shard → position: opaque to users, resumable on any replica, and a
//! damaged token is refused rather than misread.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_types::{Entry, Frontier, codec};

use crate::error::{Error, Result};

const PREFIX: &str = "c1.";

/// Per shard, the position to read from next (shards never read: absent, meaning
/// from the oldest entry).
///
/// ```
/// use cairn_client::Cursor;
/// let start = Cursor::default();
/// let token = start.token();
/// assert!(token.starts_with("c1."));
/// assert_eq!(Cursor::parse(&token).unwrap(), start);
/// assert!(Cursor::parse("c1.damaged").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<u32, Frontier>);

impl Cursor {
    /// The printable token.
    pub fn token(&self) -> String {
        // A map of plain values always encodes.
        let bytes = codec::encode_checked(&self.0).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token back; [`Error::Invalid`] names what is wrong with it.
    pub fn parse(token: &str) -> Result<Self> {
        let Some(body) = token.trim().strip_prefix(PREFIX) else {
            return Err(Error::Invalid(format!("not a cursor: a cursor starts with {PREFIX:?}")));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Error::Invalid("not a cursor: its text is not base64url".into()))?;
        let map = codec::decode_checked(&bytes)
            .map_err(|e| Error::Invalid(format!("not a cursor (damaged or truncated?): {e}")))?;
        Ok(Self(map))
    }

    /// The position of one shard (`None`: from its oldest entry).
    pub fn shard(&self, shard: u32) -> Option<&Frontier> {
        self.0.get(&shard)
    }

    /// Moves `shard`'s position past `entry`, which was delivered from it: an origin's
    /// entries come in seq order, so the position after any delivered entry is exact.
    pub fn advance(&mut self, shard: u32, entry: &Entry) {
        let position = self.0.entry(shard).or_default();
        let seq = position.0.entry(entry.id.origin).or_insert(0);
        *seq = (*seq).max(entry.id.seq);
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.token())
    }
}

impl std::str::FromStr for Cursor {
    type Err = Error;

    fn from_str(token: &str) -> Result<Self> {
        Self::parse(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::{EntryId, SiteId};

    #[test]
    fn tokens_read_back_and_damage_is_refused() {
        let mut cursor = Cursor::default();
        cursor.0.insert(3, Frontier([(SiteId(7), 42), (SiteId(9), 1)].into()));
        cursor.0.insert(0, Frontier::default());
        let token = cursor.token();
        assert!(token.starts_with("c1.") && token.is_ascii());
        assert_eq!(Cursor::parse(&token).unwrap(), cursor);
        let mut damaged = token.clone().into_bytes();
        let i = damaged.len() - 3;
        damaged[i] = if damaged[i] == b'A' { b'B' } else { b'A' };
        assert!(Cursor::parse(std::str::from_utf8(&damaged).unwrap()).is_err());
        assert!(Cursor::parse("42").unwrap_err().to_string().contains("starts with"));
    }

    #[test]
    fn advancing_keeps_the_highest_seq_per_origin() {
        let mut cursor = Cursor::default();
        let entry = |origin, seq| Entry::plain(EntryId { origin: SiteId(origin), seq }, 0, Vec::new());
        cursor.advance(2, &entry(1, 5));
        cursor.advance(2, &entry(1, 3));
        cursor.advance(2, &entry(4, 1));
        assert_eq!(cursor.shard(2), Some(&Frontier([(SiteId(1), 5), (SiteId(4), 1)].into())));
        assert_eq!(cursor.shard(0), None);
    }
}
