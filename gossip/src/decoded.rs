//! Decoded gossip values kept from one view build to the next: a value that did not
//! change since the last build is not decoded again. Pure: the cache is a plain value
//! the caller keeps ([`crate::view::build_view_cached`]); what a value decodes to depends
//! only on its key and its text, so a cached answer is the answer.

use std::collections::HashMap;
use std::net::SocketAddr;

use cairn_inventory::{RevocationList, SiteId};

use crate::summary::{
    DbSummary, LoadSummary, PlanSummary, ReplicaSummary, SiteSummary, SummaryKey, decode_value,
};

/// One decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Site(SiteSummary),
    Load,
    Db(DbSummary),
    Replica(ReplicaSummary),
    Plan(PlanSummary),
    Revocations(RevocationList),
}

/// Decodes `text` as the value of `key` (a `site` summary's address must parse, too).
pub(crate) fn decode(key: &SummaryKey, text: &str) -> Result<Value, String> {
    Ok(match key {
        SummaryKey::Site => {
            let site: SiteSummary = decode_value(text)?;
            site.addr
                .as_str()
                .parse::<SocketAddr>()
                .map_err(|e| format!("address {:?}: {e}", site.addr.as_str()))?;
            Value::Site(site)
        }
        SummaryKey::Load => decode_value::<LoadSummary>(text).map(|_| Value::Load)?,
        SummaryKey::Db(_) => Value::Db(decode_value(text)?),
        SummaryKey::Replica(..) => Value::Replica(decode_value(text)?),
        SummaryKey::Plan(_) => Value::Plan(decode_value(text)?),
        SummaryKey::Revocations => Value::Revocations(decode_value(text)?),
    })
}

#[derive(Debug)]
struct Cached {
    text: String,
    decoded: Result<Value, String>,
    build: u64,
}

/// Decoded values by site and key, from the last build. Values no build asked for are
/// dropped at the end of the next one, so it holds at most what one view reads.
#[derive(Debug, Default)]
pub struct DecodeCache {
    values: HashMap<SiteId, HashMap<String, Cached>>,
    build: u64,
    decoded: u64,
    reused: u64,
}

impl DecodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.values.values().map(HashMap::len).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Values decoded and values reused, over the cache's life.
    pub fn counts(&self) -> (u64, u64) {
        (self.decoded, self.reused)
    }

    pub(crate) fn begin(&mut self) {
        self.build += 1;
    }

    /// `text`, the value of `key` (`raw_key` as gossiped) of `site`, decoded — from the
    /// last build when the text is the same.
    pub(crate) fn get(
        &mut self,
        site: SiteId,
        key: &SummaryKey,
        raw_key: &str,
        text: &str,
    ) -> Result<Value, String> {
        let build = self.build;
        let site_values = self.values.entry(site).or_default();
        if let Some(cached) = site_values.get_mut(raw_key)
            && cached.text == text
        {
            cached.build = build;
            self.reused += 1;
            return cached.decoded.clone();
        }
        let decoded = decode(key, text);
        self.decoded += 1;
        site_values
            .insert(raw_key.to_owned(), Cached { text: text.to_owned(), decoded: decoded.clone(), build });
        decoded
    }

    pub(crate) fn end(&mut self) {
        let build = self.build;
        for site_values in self.values.values_mut() {
            site_values.retain(|_, cached| cached.build == build);
        }
        self.values.retain(|_, site_values| !site_values.is_empty());
    }
}
