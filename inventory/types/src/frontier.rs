//! Frontiers: per origin site, the seq up to which a log holds every entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entries::{MAX_FRONTIER_ORIGINS, MAX_SEQ};
use crate::ids::SiteId;

/// Per origin site, the seq up to which a log holds every entry.
///
/// Encoded as a map in binary formats and as a list of `[origin, seq]` pairs in JSON.
/// Decoding refuses more than [`MAX_FRONTIER_ORIGINS`] origins, an origin listed twice
/// and seqs above [`MAX_SEQ`], so a frontier from a peer or a file is always in range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier(pub BTreeMap<SiteId, u64>);

impl Serialize for Frontier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_seq(self.0.iter())
        } else {
            serializer.collect_map(self.0.iter())
        }
    }
}

impl<'de> Deserialize<'de> for Frontier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;

        impl Visit {
            fn add<E: serde::de::Error>(
                map: &mut BTreeMap<SiteId, u64>,
                origin: SiteId,
                seq: u64,
            ) -> Result<(), E> {
                if map.len() >= MAX_FRONTIER_ORIGINS {
                    return Err(E::custom(format!(
                        "a frontier lists at most {MAX_FRONTIER_ORIGINS} origins"
                    )));
                }
                if seq > MAX_SEQ {
                    return Err(E::custom(format!(
                        "frontier seq {seq} of origin {origin} is above the maximum {MAX_SEQ}"
                    )));
                }
                if map.insert(origin, seq).is_some() {
                    return Err(E::custom(format!("frontier lists origin {origin} twice")));
                }
                Ok(())
            }
        }

        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Frontier;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a frontier: at most {MAX_FRONTIER_ORIGINS} (origin, seq) pairs")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Frontier, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((origin, seq)) = access.next_entry::<SiteId, u64>()? {
                    Self::add(&mut map, origin, seq)?;
                }
                Ok(Frontier(map))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut access: A) -> Result<Frontier, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((origin, seq)) = access.next_element::<(SiteId, u64)>()? {
                    Self::add(&mut map, origin, seq)?;
                }
                Ok(Frontier(map))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_seq(Visit)
        } else {
            deserializer.deserialize_map(Visit)
        }
    }
}

impl Frontier {
    /// The seq up to which `origin`'s entries are all held (0: none).
    pub fn get(&self, origin: SiteId) -> u64 {
        self.0.get(&origin).copied().unwrap_or(0)
    }

    /// Whether this frontier holds everything `other` holds.
    pub fn covers(&self, other: &Self) -> bool {
        other.0.iter().all(|(origin, seq)| self.get(*origin) >= *seq)
    }

    /// How many entries this frontier holds beyond `other`: per origin, the seqs it
    /// covers above `other`'s, summed (saturating).
    pub fn entries_beyond(&self, other: &Self) -> u64 {
        self.0.iter().map(|(origin, seq)| seq.saturating_sub(other.get(*origin))).fold(0, u64::saturating_add)
    }

    /// `(origin, seq)` pairs in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.0.iter().map(|(origin, seq)| (*origin, *seq))
    }

    /// How many origins it lists.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it lists no origin.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
