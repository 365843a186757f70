//! What a message is addressed by: topics, topic filters, keys, producer names, and the
//! routing of a message to its shard.
//!
//! A topic is `/`-separated levels of UTF-8 (as MQTT's); a filter matches topics level by
//! level, `+` standing for one level and a last `#` for any number of levels (also none).
//! Each type checks its value when it is made, including when it is decoded from a
//! peer's bytes, so one that exists is valid.
//!
//! **Routing** (version 1, [`Routing::Fnv1a64`]): a message goes to shard
//! `fnv1a64(key or, without a key, the topic's UTF-8 bytes) mod shards`, where
//! `fnv1a64` is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`, one byte at a time: `h ^= byte; h *= prime`).

use serde::{Deserialize, Serialize};

use crate::error::ValueError;

/// The longest topic or filter, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;
/// The longest message key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest producer name, in bytes.
pub const MAX_PRODUCER_LEN: usize = 128;

fn invalid(what: &'static str, why: impl Into<String>) -> ValueError {
    ValueError::InvalidSetting { what, why: why.into() }
}

/// A message's topic: up to [`MAX_TOPIC_LEN`] bytes of UTF-8, `/`-separated levels, with
/// no NUL and no wildcard (`+`, `#`). The empty topic is the topic of messages written
/// without one.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    /// The topic, if `text` is a valid one.
    pub fn new(text: impl Into<String>) -> Result<Self, ValueError> {
        let text = text.into();
        if text.len() > MAX_TOPIC_LEN {
            return Err(invalid("topic", format!("{} bytes is longer than {MAX_TOPIC_LEN}", text.len())));
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return Err(invalid("topic", format!("{text:?} holds {c:?} (wildcards belong in filters)")));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = ValueError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<Topic> for String {
    fn from(topic: Topic) -> Self {
        topic.0
    }
}

impl std::str::FromStr for Topic {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic filter, as MQTT's: levels separated by `/`, where a level that is exactly `+`
/// matches any one level and a last level `#` matches the parent and any number of levels
/// below it. A filter that starts with a wildcard does not match topics starting with
/// `$`. The empty filter matches only the empty topic; `#` matches every topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicFilter(String);

impl TopicFilter {
    /// The filter that matches every topic.
    pub fn all() -> Self {
        Self("#".into())
    }

    /// The filter, if `text` is a valid one: `+` only as a whole level, `#` only as the
    /// whole last level, no NUL, at most [`MAX_TOPIC_LEN`] bytes.
    pub fn new(text: impl Into<String>) -> Result<Self, ValueError> {
        let text = text.into();
        if text.len() > MAX_TOPIC_LEN {
            return Err(invalid("filter", format!("{} bytes is longer than {MAX_TOPIC_LEN}", text.len())));
        }
        if text.contains('\0') {
            return Err(invalid("filter", format!("{text:?} holds a NUL")));
        }
        let levels: Vec<&str> = text.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
                return Err(invalid("filter", format!("{text:?}: '#' must be the whole last level")));
            }
            if level.contains('+') && *level != "+" {
                return Err(invalid("filter", format!("{text:?}: '+' must be a whole level")));
            }
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The one topic this filter matches, when it has no wildcard.
    pub fn exact(&self) -> Option<Topic> {
        if self.0.contains(['+', '#']) { None } else { Some(Topic(self.0.clone())) }
    }

    /// Whether it matches every topic.
    pub fn is_all(&self) -> bool {
        self.0 == "#"
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &Topic) -> bool {
        let topic = topic.as_str();
        if topic.starts_with('$') && self.0.starts_with(['+', '#']) {
            return false;
        }
        if self.is_all() {
            return true;
        }
        let mut levels = topic.split('/');
        for want in self.0.split('/') {
            match want {
                "#" => return true,
                "+" => {
                    if levels.next().is_none() {
                        return false;
                    }
                }
                want => {
                    if levels.next() != Some(want) {
                        return false;
                    }
                }
            }
        }
        levels.next().is_none()
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = ValueError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<TopicFilter> for String {
    fn from(filter: TopicFilter) -> Self {
        filter.0
    }
}

impl std::str::FromStr for TopicFilter {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's key: up to [`MAX_KEY_LEN`] bytes, which route the message instead of its
/// topic (messages with one key land in one shard, in order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "serde_bytes::ByteBuf", into = "serde_bytes::ByteBuf")]
pub struct MessageKey(Vec<u8>);

impl MessageKey {
    /// The key, if it is at most [`MAX_KEY_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ValueError> {
        let bytes = bytes.into();
        if bytes.len() > MAX_KEY_LEN {
            return Err(invalid("key", format!("{} bytes is longer than {MAX_KEY_LEN}", bytes.len())));
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<serde_bytes::ByteBuf> for MessageKey {
    type Error = ValueError;

    fn try_from(bytes: serde_bytes::ByteBuf) -> Result<Self, Self::Error> {
        Self::new(bytes.into_vec())
    }
}

impl From<MessageKey> for serde_bytes::ByteBuf {
    fn from(key: MessageKey) -> Self {
        Self::from(key.0)
    }
}

/// A writer's name for itself, for idempotent publishing: 1 to [`MAX_PRODUCER_LEN`]
/// bytes of printable ASCII (no spaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProducerName(String);

impl ProducerName {
    /// The name, if it is a valid one.
    pub fn new(text: impl Into<String>) -> Result<Self, ValueError> {
        let text = text.into();
        if text.is_empty() || text.len() > MAX_PRODUCER_LEN {
            return Err(invalid("producer", format!("{text:?} is not 1 to {MAX_PRODUCER_LEN} bytes")));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "producer",
                format!("{text:?} holds a character other than printable ASCII"),
            ));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProducerName {
    type Error = ValueError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<ProducerName> for String {
    fn from(name: ProducerName) -> Self {
        name.0
    }
}

impl std::str::FromStr for ProducerName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl std::fmt::Display for ProducerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's place in its producer's numbering: the writer's name and its number for
/// the message. One `(name, seq)` is stored once per shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerStamp {
    /// The writer.
    pub name: ProducerName,
    /// Its number for this message.
    pub seq: u64,
}

/// How a db maps messages to shards, recorded in its settings so every client computes
/// the same shard. Only one version exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Routing {
    /// Version 1: `fnv1a64(key or topic) mod shards` (see the module docs).
    #[default]
    Fnv1a64,
}

impl Routing {
    /// The shard, of `shards`, a message with this key (or, without one, topic) goes to.
    pub fn shard(self, topic: &Topic, key: Option<&MessageKey>, shards: u32) -> u32 {
        let bytes = key.map_or(topic.as_str().as_bytes(), MessageKey::as_bytes);
        match self {
            Self::Fnv1a64 => (fnv1a64(bytes) % u64::from(shards.max(1))) as u32,
        }
    }

    /// Its version number, as the README names it.
    pub fn version(self) -> u32 {
        match self {
            Self::Fnv1a64 => 1,
        }
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    /// The examples of the MQTT 5.0 specification, section 4.7.
    #[test]
    fn filters_match_as_mqtt_says() {
        let tennis = f("sport/tennis/player1/#");
        for topic in
            ["sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"]
        {
            assert!(tennis.matches(&t(topic)), "{topic}");
        }
        assert!(f("sport/#").matches(&t("sport")));
        assert!(f("#").matches(&t("sport/tennis")));
        let plus = f("sport/tennis/+");
        assert!(plus.matches(&t("sport/tennis/player1")));
        assert!(plus.matches(&t("sport/tennis/player2")));
        assert!(!plus.matches(&t("sport/tennis/player1/ranking")));
        assert!(!f("sport/+").matches(&t("sport")));
        assert!(f("sport/+").matches(&t("sport/")));
        assert!(f("+/+").matches(&t("/finance")));
        assert!(f("/+").matches(&t("/finance")));
        assert!(!f("+").matches(&t("/finance")));
        assert!(f("+/tennis/#").matches(&t("sport/tennis/player1")));
        assert!(!f("#").matches(&t("$SYS/monitor/Clients")));
        assert!(!f("+/monitor/Clients").matches(&t("$SYS/monitor/Clients")));
        assert!(f("$SYS/#").matches(&t("$SYS/monitor/Clients")));
        assert!(f("$SYS/monitor/+").matches(&t("$SYS/monitor/Clients")));
        for bad in ["sport/tennis#", "sport/tennis/#/ranking", "sport+", "sp+rt/x", "a/#/b"] {
            assert!(TopicFilter::new(bad).is_err(), "{bad}");
        }
        assert!(f("").matches(&t("")) && !f("").matches(&t("a")));
        assert_eq!(f("a/b").exact(), Some(t("a/b")));
        assert_eq!(f("a/+").exact(), None);
    }

    #[test]
    fn names_are_checked_when_made_and_when_decoded() {
        assert!(Topic::new("a/+").is_err());
        assert!(Topic::new("x".repeat(MAX_TOPIC_LEN + 1)).is_err());
        assert!(ProducerName::new("").is_err() && ProducerName::new("a b").is_err());
        assert!(MessageKey::new(vec![0; MAX_KEY_LEN + 1]).is_err());
        let bad = crate::codec::encode(&"a/#".to_string()).unwrap();
        let error = crate::codec::decode::<Topic>(&bad).unwrap_err().to_string();
        assert!(error.contains("topic"), "{error}");
    }

    #[test]
    fn routing_is_fnv1a64_of_the_key_or_topic() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let r = Routing::Fnv1a64;
        assert_eq!(r.shard(&t("foobar"), None, 8), (0x8594_4171_f739_67e8u64 % 8) as u32);
        let key = MessageKey::new(b"a".to_vec()).unwrap();
        assert_eq!(r.shard(&t("ignored"), Some(&key), 1000), (0xaf63_dc4c_8601_ec8cu64 % 1000) as u32);
    }
}
