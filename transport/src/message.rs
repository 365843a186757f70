//! The requests a site answers and its responses.
//!
//! One request per bidirectional stream: the client writes one frame and finishes its
//! side; the site answers with one frame. Both are encoded with the inventory's codec
//! (plain envelope) inside a frame. New kinds of request are added as new variants at
//! the end of the enums, so older variants keep their encoding.

use std::net::SocketAddr;

use cairn_types::{
    ClusterId, DbName, DbRecord, DbSettings, DrainOrder, Entry, EntryId, FetchStart, Frontier, Message,
    OfferOutcome, OutOfRange, Plan, ProducerName, Replication, Retention, RevocationList, Role, SiteId,
    Stored, TopicFilter,
};
use serde::{Deserialize, Serialize};

use crate::pull::PullRequest;

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
    /// Prepare a db's creation: the site answers [`Response::DbPrepared`] with the
    /// record it would write (nothing is written until the operator sends it back sealed
    /// in [`Request::CommitDb`]), [`Response::DbCreated`] `{created: false}` if the db
    /// exists with these settings, or [`Response::Rejected`] if the name is taken with
    /// other settings. [`crate::operator::change_db`] does both steps.
    CreateDb {
        /// The name.
        name: DbName,
        /// Shard count, replication factor and retention (in range, or the request does
        /// not decode).
        settings: DbSettings,
    },
    /// Append messages to a shard. Answered with [`Response::Published`] once they are
    /// durable here, or [`Response::NotHere`] if this site holds no writable replica.
    Publish {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
        /// The messages, in order.
        messages: Vec<serde_bytes::ByteBuf>,
    },
    /// Read a shard's entries in this site's arrival order. Answered with
    /// [`Response::Entries`] or [`Response::NotHere`].
    Read {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
        /// The cursor: the arrival number to read from (0 = the start).
        from: u64,
        /// At most this many entries.
        max: u32,
    },
    /// Open a pull stream (see [`crate::pull`]); answered by a stream of
    /// [`crate::PullFrame`]s instead of one response.
    Pull(PullRequest),
    /// Work out, from this site's view, the plans an operator request would produce,
    /// without applying them. Answered with [`Response::PlanPreview`] (or
    /// [`Response::Rejected`] naming what is wrong with the request). The operator
    /// applies a preview by offering each plan to its site ([`Request::Schedule`]).
    PlanPreview(PlanRequest),
    /// Mark this site as draining (being decommissioned) or not; durable, and gossiped
    /// so planners move its replicas away and place nothing new here. Answered with
    /// [`Response::Draining`].
    SetDraining {
        /// The operator's sealed order, naming this site: draining or not.
        order: DrainOrder,
    },
    /// Cancel this site's pending plan for a db (its handovers in progress are undone).
    /// Answered with [`Response::Cancelled`].
    CancelPlan {
        /// The db.
        db: DbName,
    },
    /// Prepare a change of a db's replication factor and/or retention (shard counts
    /// never change): answered with [`Response::DbPrepared`] (the newer version of the
    /// db's record, to be sealed and committed), [`Response::DbChanged`] `{changed:
    /// false}` when nothing changes, or [`Response::Rejected`] naming the unknown db.
    /// Once committed, every holder takes the change up, and automation adds or trims
    /// replicas to the new factor.
    AlterDb {
        /// The db.
        db: DbName,
        /// The new replication factor, if it changes.
        replication: Option<Replication>,
        /// The new retention, if it changes.
        retention: Option<Retention>,
    },
    /// Prepare a db's drop: answered with [`Response::DbPrepared`] (its tombstone, to be
    /// sealed and committed), [`Response::DbChanged`] `{dropped: true, changed: false}`
    /// if it is dropped already, or [`Response::Rejected`] if no such db is in the view.
    /// Once committed, every site holding the db deletes its replicas, data and pending
    /// plan.
    DropDb {
        /// The db.
        db: DbName,
    },
    /// Append messages with topics to a shard, acknowledged at the asked durability.
    /// Answered with [`Response::Written`], [`Response::NotHere`], or an
    /// [`WireErrorKind::OutcomeUnknown`] error when the acknowledgement did not come in
    /// time (the messages may or may not be stored: retry with the same producer
    /// numbers).
    Write(WriteRequest),
    /// Read one shard by position and topic filter, waiting for new entries if asked.
    /// Answered with [`Response::Fetched`], [`Response::OutOfRange`] or
    /// [`Response::NotHere`].
    Fetch(FetchRequest),
    /// A db's settings and, per shard, the sites that hold a ready replica, by this
    /// site's view. Answered with [`Response::Routes`] or [`Response::Rejected`].
    Routes {
        /// The db.
        db: DbName,
    },
    /// Open a subscription (see [`crate::subscribe`]); answered by a stream of
    /// [`crate::SubscriptionFrame`]s instead of one response.
    Subscribe(crate::subscribe::SubscribeRequest),
    /// Load the site's certificate and key again from its data dir (after the operator
    /// renewed them), as SIGHUP does. Answered with [`Response::Reloaded`], or an error
    /// naming what is wrong with the files (the site keeps the credentials it had).
    ReloadCredentials,
    /// Write a db record an operator sealed (a creation, change or drop that
    /// [`Request::CreateDb`], [`Request::AlterDb`] or [`Request::DropDb`] prepared), and
    /// gossip it. The site checks the seal and that the record still follows from what
    /// it knows (another change in between refuses it: prepare again). Answered with
    /// [`Response::DbCreated`] or [`Response::DbChanged`], or [`Response::Rejected`].
    CommitDb {
        /// The record, with its seal.
        record: DbRecord,
    },
    /// Take this revocation list (an operator sealed it; newer than the site's) and
    /// gossip it: every site then refuses the certificates and identities it names.
    /// Answered with [`Response::RevocationsTaken`], or [`Response::Rejected`] naming
    /// what is wrong with the seal.
    Revoke {
        /// The list, with its seal.
        list: RevocationList,
    },
}

/// How many replicas must hold a write before it is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ack {
    /// This site's durable commit.
    #[default]
    Local,
    /// A majority of the db's replication factor (2 of 2, 2 of 3, 3 of 5), counting this
    /// site.
    Quorum,
    /// Every ready replica of the shard, by this site's view.
    All,
}

impl std::str::FromStr for Ack {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => Ok(Self::Local),
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            other => Err(format!("unknown ack level {other:?}: local, quorum or all")),
        }
    }
}

/// A write of messages to one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The db.
    pub db: DbName,
    /// The shard (the writer routes: see the db's routing).
    pub shard: u32,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The writer's name and its number for the first message, for idempotence.
    pub producer: Option<(ProducerName, u64)>,
    /// How durable before the answer.
    pub ack: Ack,
    /// How long to wait for the acknowledgements beyond this site's commit.
    pub ack_timeout_ms: u32,
}

/// A read of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The db.
    pub db: DbName,
    /// The shard.
    pub shard: u32,
    /// Where to start.
    pub start: FetchStart,
    /// Which topics.
    pub filter: TopicFilter,
    /// Only entries stamped at or after this time.
    pub since_ms: Option<u64>,
    /// At most this many entries.
    pub max_entries: u32,
    /// Wait up to this long for a first matching entry when none is there (long poll).
    pub wait_ms: u32,
}

/// A db's routes, as [`Request::Routes`] answers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// The db's settings (its shard count and routing among them).
    pub settings: DbSettings,
    /// Per shard, the addresses of live sites with a ready replica (the answering site
    /// among them if it holds one).
    pub holders: Vec<Vec<SocketAddr>>,
}

/// A change an operator asks the planners for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanRequest {
    /// Even out replica counts over the live core sites (±1, or by capacity).
    Rebalance,
    /// Move every replica off one site, so it can leave.
    Decommission {
        /// The site.
        site: SiteId,
    },
    /// Move one replica.
    Move {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
        /// The site holding it now.
        from: SiteId,
        /// The site to hold it instead.
        to: SiteId,
    },
    /// Bring every shard to its db's replication factor on the live sites (add
    /// replicas to shards below it, hand extras over), as automation's repair does but
    /// without giving up on dead sites: their replicas still count.
    Repair,
}

/// What a plan request would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPreview {
    /// Each replica that would move.
    pub moves: Vec<PlannedMove>,
    /// Replicas, by site, that should move but have nowhere to go.
    pub stuck: Vec<(SiteId, u64)>,
    /// The plans, one per db and site, with where to deliver each.
    pub plans: Vec<SitePlan>,
}

/// One replica moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// The db.
    pub db: DbName,
    /// The shard.
    pub shard: u32,
    /// The site giving it up.
    pub from: SiteId,
    /// The site taking it.
    pub to: SiteId,
    /// Payload bytes it holds (what the move copies), by the view.
    pub bytes: u64,
}

/// A plan and the site that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePlan {
    /// The site.
    pub site: SiteId,
    /// Its address, by the view.
    pub addr: String,
    /// The plan.
    pub plan: Plan,
}

impl Request {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Schedule(_) => "schedule",
            Self::Dump => "dump",
            Self::CreateDb { .. } => "create_db",
            Self::Publish { .. } => "publish",
            Self::Read { .. } => "read",
            Self::Pull(_) => "pull",
            Self::PlanPreview(_) => "plan_preview",
            Self::SetDraining { .. } => "set_draining",
            Self::CancelPlan { .. } => "cancel_plan",
            Self::AlterDb { .. } => "alter_db",
            Self::DropDb { .. } => "drop_db",
            Self::Write(_) => "write",
            Self::Fetch(_) => "fetch",
            Self::Routes { .. } => "routes",
            Self::Subscribe(_) => "subscribe",
            Self::ReloadCredentials => "reload_credentials",
            Self::CommitDb { .. } => "commit_db",
            Self::Revoke { .. } => "revoke",
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
    /// The published messages' ids, in order: they are durable on this site.
    Published {
        /// The ids.
        ids: Vec<EntryId>,
    },
    /// This site cannot serve the shard; `holders` are the sites that can.
    NotHere {
        /// Why not here.
        reason: String,
        /// Where to go instead (sites with a ready replica, as this site's view says).
        holders: Vec<SocketAddr>,
    },
    /// Entries read, in arrival order, and the cursor to read from next.
    Entries {
        /// The entries, with their local arrival numbers.
        entries: Vec<ReadEntry>,
        /// The cursor for the next read.
        next: u64,
        /// The arrival number of the oldest entry the replica still holds (what
        /// retention left): a read from below it found nothing of what was there.
        start: u64,
    },
    /// What a plan request would do.
    PlanPreview(PlanPreview),
    /// The site's draining flag, as now stored.
    Draining {
        /// Draining or not.
        on: bool,
    },
    /// The plan cancelled, if the site had one pending for the db.
    Cancelled {
        /// Its id.
        plan: Option<cairn_types::PlanId>,
    },
    /// A db's settings as this site now records them (after [`Request::AlterDb`] or
    /// [`Request::DropDb`]); `changed` is false when they already were so.
    DbChanged {
        /// Whether this request changed anything.
        changed: bool,
        /// The replication factor now (the last one, for a dropped db).
        replication: u32,
        /// Whether the db is dropped.
        dropped: bool,
    },
    /// A write's ids, in order, each with whether it was a duplicate (stored before).
    Written {
        /// The ids.
        ids: Vec<Stored>,
    },
    /// A fetch's entries and the position after them.
    Fetched {
        /// The entries.
        entries: Vec<Entry>,
        /// Where to fetch from next, on any replica.
        cursor: Frontier,
        /// Whether the replica holds more beyond `cursor` now.
        more: bool,
    },
    /// The fetch's position needs entries that retention has removed.
    OutOfRange(OutOfRange),
    /// A db's routes.
    Routes(Routes),
    /// The site now serves with the certificate it loaded again.
    Reloaded {
        /// Who it names.
        identity: String,
        /// When it stops being valid (ms since the Unix epoch).
        expires_ms: u64,
    },
    /// The record a db creation, change or drop would write: the operator seals it and
    /// sends it back in [`Request::CommitDb`]. Nothing is written yet.
    DbPrepared {
        /// The record.
        record: DbRecord,
    },
    /// What a site did with a revocation list.
    RevocationsTaken {
        /// The list the site now holds (issued at this time).
        issued_ms: u64,
        /// Whether the one sent was newer than what the site held (so it was taken).
        taken: bool,
    },
}

/// An entry as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEntry {
    /// Its arrival number on the site that answered.
    pub arrival: u64,
    /// The entry.
    pub entry: Entry,
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
    /// What its pull streams received since it started.
    pub data: DataCounters,
    /// What retention removed from its replicas since it started.
    pub retention: RetentionRemoved,
    /// When the certificate it serves with stops being valid (ms since the Unix epoch).
    pub certificate_expires_ms: u64,
}

/// What retention removed from a site's replicas since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRemoved {
    /// Entries removed.
    pub entries: u64,
    /// Payload bytes removed.
    pub bytes: u64,
}

/// Totals of what a site's pull streams received, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCounters {
    /// Batches stored.
    pub batches: u64,
    /// Entries received (new and duplicate).
    pub entries: u64,
    /// Entries received that were already held.
    pub duplicates: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Batches refused (bad checksum or undecodable) and asked for again.
    pub refused_batches: u64,
    /// Pull streams opened.
    pub streams_opened: u64,
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
    /// The site could not get the request done elsewhere (a replicant forwarding a
    /// write found no core site to take it); try again.
    Unavailable,
    /// The write is stored here but the acknowledgements it asked for did not come in
    /// time: it may or may not be held as durably as asked.
    OutcomeUnknown,
    /// The peer's identity may not send this request (see the site's access table).
    Forbidden,
}

impl WireError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}
