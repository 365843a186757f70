//! A db's settings as one validated type, shared by the stored record, the gossiped
//! summary and the cluster view.
//!
//! Each number can only hold a value in its range ("parse, don't validate"): a
//! [`ShardCount`] or [`Replication`] that exists has passed its constructor, including
//! when it was decoded from a peer's bytes or a dump file. They encode exactly as the
//! plain `u32` they wrap, so stored records keep their format.

use serde::{Deserialize, Serialize};

use crate::error::ValueError;
use crate::topics::Routing;

/// The most shards a db may have.
pub const MAX_SHARDS: u32 = 65_536;
/// The highest replication factor.
pub const MAX_REPLICATION: u32 = 16;

macro_rules! bounded_u32 {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u32", into = "u32")]
        pub struct $name(u32);

        impl $name {
            /// The value, if it is in range.
            pub fn new(value: u32) -> Result<Self, ValueError> {
                if (1..=$max).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(ValueError::InvalidSetting {
                        what: $what,
                        why: format!("{value} is out of range 1..={}", $max),
                    })
                }
            }

            /// The number.
            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl TryFrom<u32> for $name {
            type Error = ValueError;

            fn try_from(value: u32) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let value = text.trim().parse::<u32>().map_err(|_| ValueError::InvalidSetting {
                    what: $what,
                    why: format!("{text:?} is not a whole number in 1..={}", $max),
                })?;
                Self::new(value)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

bounded_u32!(
    /// A db's shard count: 1 to [`MAX_SHARDS`]. Shards are numbered `0..count`.
    ShardCount,
    "shards",
    MAX_SHARDS
);
bounded_u32!(
    /// A replication factor: 1 to [`MAX_REPLICATION`] ready replicas per shard.
    Replication,
    "replication",
    MAX_REPLICATION
);

impl ShardCount {
    /// Whether `shard` is one of the db's shards.
    pub fn contains(self, shard: u32) -> bool {
        shard < self.0
    }
}

impl Replication {
    /// A majority of the factor: 1 of 1, 2 of 2, 2 of 3, 3 of 5.
    pub fn majority(self) -> u32 {
        self.0 / 2 + 1
    }
}

/// How long a db keeps its shard logs' entries. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    /// Entries older than this (by local arrival time) are removed by clean-up.
    pub max_age_ms: Option<u64>,
    /// Each shard's log is cut from its oldest end down to this many payload bytes.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Whether either limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_age_ms.is_some() || self.max_bytes.is_some()
    }
}

/// A db's settings: everything an operator chooses when creating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSettings {
    /// How many shards (never changes).
    pub shards: ShardCount,
    /// How many ready replicas each shard should have.
    pub replication: Replication,
    /// How long entries are kept.
    pub retention: Retention,
    /// How messages are mapped to shards (absent in dumps of older cairns: version 1).
    #[serde(default)]
    pub routing: Routing,
}

impl DbSettings {
    /// Settings from plain numbers, each checked; the error names the first out of range.
    pub fn new(shards: u32, replication: u32, retention: Retention) -> Result<Self, ValueError> {
        Ok(Self {
            shards: ShardCount::new(shards)?,
            replication: Replication::new(replication)?,
            retention,
            routing: Routing::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_do_not_exist() {
        assert!(ShardCount::new(0).is_err());
        assert!(ShardCount::new(MAX_SHARDS + 1).is_err());
        assert!(ShardCount::new(u32::MAX).is_err());
        assert_eq!(ShardCount::new(MAX_SHARDS).unwrap().get(), MAX_SHARDS);
        assert!(Replication::new(0).is_err());
        assert!(Replication::new(17).is_err());
        let error = DbSettings::new(4, 0, Retention::default()).unwrap_err().to_string();
        assert!(error.contains("replication") && error.contains("0 is out of range"), "{error}");
    }

    #[test]
    fn they_encode_as_plain_numbers_and_refuse_bad_ones_on_decode() {
        let settings = DbSettings::new(8, 3, Retention::default()).unwrap();
        let plain = (8u32, 3u32, Retention::default(), 0u32);
        assert_eq!(crate::codec::encode(&settings).unwrap(), crate::codec::encode(&plain).unwrap());
        let bad = crate::codec::encode(&(u32::MAX, 3u32, Retention::default(), 0u32)).unwrap();
        let error = crate::codec::decode::<DbSettings>(&bad).unwrap_err().to_string();
        assert!(error.contains("shards"), "{error}");
        let json = r#"{"shards": 4, "replication": 0, "retention": {"max_age_ms": null, "max_bytes": null}}"#;
        let error = serde_json::from_str::<DbSettings>(json).unwrap_err().to_string();
        assert!(error.contains("replication: 0 is out of range 1..=16"), "{error}");
    }

    #[test]
    fn majorities() {
        let m = |n| Replication::new(n).unwrap().majority();
        assert_eq!([m(1), m(2), m(3), m(4), m(5)], [1, 2, 2, 3, 3]);
    }
}
