//! Start times as people give them (`ctl read --since`, the HTTP API's `since=`): a
//! duration back from now, or an RFC 3339 time.

/// `--since`: a duration back from now (`90s`, `10m`, `2h`, `3d`) or an RFC 3339 time;
/// answers ms since the Unix epoch.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
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
        .map_err(|_| format!("since {text:?}: give a duration (90s, 10m, 2h, 1d) or an RFC 3339 time"))?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("since {text:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
