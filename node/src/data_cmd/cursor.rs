//! Read positions as printable tokens, and `--since` times.
//!
//! A cursor token is `c1.` followed by the URL-safe base64 (no padding) of the codec
//! encoding (version byte, CRC32C) of a map shard → position (a frontier). It is opaque
//! to users, resumes on any replica, and a damaged token is refused rather than misread.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_inventory::{Frontier, codec};

const PREFIX: &str = "c1.";

/// Per shard, the position to read from next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor(pub(crate) BTreeMap<u32, Frontier>);

impl Cursor {
    /// The printable token.
    pub(crate) fn token(&self) -> String {
        let bytes = codec::encode_checked(&self.0).expect("a cursor always encodes");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token back.
    pub(crate) fn parse(token: &str) -> anyhow::Result<Self> {
        let Some(body) = token.trim().strip_prefix(PREFIX) else {
            bail!("not a cursor: a cursor starts with {PREFIX:?} (use the \"cursor\" a read printed)");
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).context("not a cursor: its text is not base64url")?;
        let map = codec::decode_checked(&bytes)
            .map_err(|e| anyhow::anyhow!("not a cursor (damaged or truncated?): {e}"))?;
        Ok(Self(map))
    }
}

/// `--since`: a duration back from now (`90s`, `10m`, `2h`, `3d`) or an RFC 3339 time;
/// answers ms since the Unix epoch.
pub(crate) fn parse_since(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let text = text.trim();
    let units = [("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
    for (unit, ms) in units {
        if let Some(number) = text.strip_suffix(unit)
            && let Ok(n) = number.parse::<u64>()
        {
            return Ok(now_ms.saturating_sub(n.saturating_mul(ms)));
        }
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--since {text:?}: give a duration (90s, 10m, 2h, 1d) or an RFC 3339 time")
        })?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).with_context(|| format!("--since {text:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_inventory::SiteId;

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
    fn since_takes_durations_and_times() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_since("90s", now).unwrap(), now - 90_000);
        assert_eq!(parse_since("10m", now).unwrap(), now - 600_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000_000);
        assert!(parse_since("yesterday", now).is_err());
    }
}
