//! The requests a site answers and its responses.
//!
//! One request per bidirectional stream: the client writes one frame and finishes its
//! side; the site answers with one frame. Both are encoded with the inventory's codec
//! (plain envelope) inside a frame. New kinds of request are added as new variants at
//! the end of the enums, so older variants keep their encoding.

use cairn_inventory::{ClusterId, DbName, OfferOutcome, Plan, Retention, Role, SiteId};
use serde::{Deserialize, Serialize};

/// What a client asks of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who are you? Answered with [`Response::Status`].
    Status,
    /// Offer a plan to the site (plan delivery). Answered with [`Response::Scheduled`]
    /// or [`Response::Rejected`]. Delivering the same plan twice is harmless.
    Schedule(Plan),
    /// The cluster view as this site holds it. Answered with [`Response::Dump`].
    Dump,
    /// Create a db (known to the cluster through this site's gossip). Answered with
    /// [`Response::DbCreated`], or [`Response::Rejected`] if this site already holds the
    /// name with other settings.
    CreateDb {
        /// The name.
        name: DbName,
        /// Shard count.
        shards: u32,
        /// Replication factor.
        replication: u32,
        /// Retention.
        retention: Retention,
    },
}

impl Request {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Schedule(_) => "schedule",
            Self::Dump => "dump",
            Self::CreateDb { .. } => "create_db",
        }
    }
}

/// What a site answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The site's identity and state.
    Status(SiteStatus),
    /// What the site did with an offered plan.
    Scheduled(OfferOutcome),
    /// The request was understood but refused (e.g. an empty plan).
    Rejected {
        /// Why.
        reason: String,
    },
    /// The request could not be handled at all.
    Error(WireError),
    /// The cluster view, as the JSON document `cairn dump --format json` prints.
    Dump {
        /// The view, JSON.
        json: String,
    },
    /// The db exists on this site with these settings (`created` says whether this
    /// request made it, or it was already there with the same settings).
    DbCreated {
        /// Whether this request created it.
        created: bool,
    },
}

/// A site's identity and state, as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// The site's permanent id.
    pub site_id: SiteId,
    /// Its cluster.
    pub cluster_id: ClusterId,
    /// cairn's version.
    pub version: String,
    /// The store format its inventory uses.
    pub store_format: u32,
    /// Milliseconds since the process started.
    pub uptime_ms: u64,
    /// Core or replicant.
    pub role: Role,
}

/// An error answered instead of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct WireError {
    /// The class of error.
    pub kind: WireErrorKind,
    /// What exactly, for people.
    pub message: String,
}

/// Classes of [`WireError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireErrorKind {
    /// The frame was malformed: unknown version, too large, truncated.
    BadFrame,
    /// The frame was fine but its payload did not decode to a request.
    Undecodable,
    /// The site is too busy to take the request now; try again.
    Busy,
    /// The request did not arrive in time.
    Timeout,
    /// The site failed while handling it.
    Internal,
}

impl WireError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}
