//! Identifiers: site ids, cluster ids, plan ids and db names.
//!
//! Each type can only hold a valid value ("parse, don't validate"): a `DbName` that
//! exists has passed [`DbName::new`], including when it was decoded from bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValueError;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Serialized as 32 hex digits in human-readable formats (JSON) and as a number
        /// in binary ones (the codec).
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u128);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_u128(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    text.parse().map_err(serde::de::Error::custom)
                } else {
                    u128::deserialize(deserializer).map(Self)
                }
            }
        }

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(rand::random())
            }

            /// The first 8 hex digits, for people reading logs and tables.
            pub fn short(&self) -> String {
                format!("{:08x}", self.0 >> 96)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ValueError::InvalidId {
                        what: $what,
                        value: s.chars().take(40).collect(),
                    });
                }
                u128::from_str_radix(s, 16).map(Self).map_err(|_| ValueError::InvalidId {
                    what: $what,
                    value: s.to_owned(),
                })
            }
        }
    };
}

hex_id!(
    /// A site's permanent identity: random on first start, kept in the inventory for ever.
    /// Shown as 32 hex digits.
    SiteId,
    "site id"
);
hex_id!(
    /// The cluster a site belongs to. A site refuses to open a data dir of another cluster.
    ClusterId,
    "cluster id"
);
hex_id!(
    /// A plan's identity, derived by the planner from its inputs (same inputs, same id).
    PlanId,
    "plan id"
);

/// The most bytes a db name may have.
pub const MAX_DB_NAME_LEN: usize = 64;

/// A db's name: 1 to 64 bytes of ASCII letters, digits, `_`, `-` and `.`, starting with a
/// letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DbName(String);

impl DbName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, ValueError> {
        let name = name.into();
        let valid_first = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        let valid_rest = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if name.len() > MAX_DB_NAME_LEN || !valid_first || !valid_rest {
            return Err(ValueError::InvalidDbName { name: name.chars().take(80).collect() });
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DbName {
    type Error = ValueError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<DbName> for String {
    fn from(value: DbName) -> Self {
        value.0
    }
}

impl FromStr for DbName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so tables line up.
        f.pad(&self.0)
    }
}

impl fmt::Debug for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_names_are_checked() {
        for good in ["a", "messages", "Q1.events_v2-x", &"z".repeat(64)] {
            assert!(DbName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"z".repeat(65)] {
            assert!(DbName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decoding_an_invalid_db_name_fails() {
        let bytes = crate::codec::encode(&"bad name".to_owned()).unwrap();
        assert!(crate::codec::decode::<DbName>(&bytes).is_err());
    }

    #[test]
    fn ids_are_hex_in_json_and_numbers_in_the_codec() {
        let id = SiteId(0xabc);
        let bytes = crate::codec::encode(&id).unwrap();
        assert!(bytes.len() <= 4, "compact in the codec: {bytes:?}");
        assert_eq!(crate::codec::decode::<SiteId>(&bytes).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SiteId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SiteId>("\"nope\"").is_err());
    }

    #[test]
    fn site_ids_print_and_parse() {
        let id = SiteId::random();
        assert_eq!(id.to_string().parse::<SiteId>().unwrap(), id);
        assert!("xyz".parse::<SiteId>().is_err());
        assert!("+0000000000000000000000000000000".parse::<SiteId>().is_err());
    }
}
