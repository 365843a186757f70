//! cairn's QUIC transport: one quinn endpoint per site carries every byte between sites
//! (requests, plan delivery, gossip) and between the CLI and a site.
//!
//! - [`tls`]: the cluster CA, identities in issued certificates, and mutual-TLS configs
//!   (ALPN `cairn/3`, `cairn/2`, `cairn/1`);
//! - [`frame`]: length-prefixed, versioned frames with a size limit checked before
//!   allocation;
//! - [`message`]: the request and response enums;
//! - [`operator`]: db creations, changes and drops sealed by an operator;
//! - [`pull`]: the pull stream protocol (catch-up and follow of shard logs);
//! - [`Endpoint`]: serving ([`Service`]), requesting (pooled connections with backoff)
//!   and gossip carriage.
//!
//! No planning or storage logic lives here; the node implements [`Service`].

mod config;
mod endpoint;
mod error;
pub mod frame;
mod gossip_packing;
mod gossip_parts;
pub mod message;
pub mod operator;
mod per_addr;
mod pool;
pub mod pull;
mod stats;
pub mod subscribe;
pub mod tls;
mod wire;

pub use config::{Congestion, DEFAULT_MTU, MAX_GOSSIP_STREAMS, TransportConfig};
pub use endpoint::{Endpoint, GossipInbox, Peer, Service};
pub use error::TransportError;
pub use message::{
    Ack, DataCounters, FetchRequest, PlanPreview, PlanRequest, PlannedMove, ReadEntry, Request, Response,
    RetentionRemoved, Routes, SitePlan, SiteStatus, WireError, WireErrorKind, WriteRequest,
};
pub use pull::{
    BatchError, PullAck, PullAckReceiver, PullAckSender, PullFrame, PullReceiver, PullRequest, PullSender,
    PullStart, SealedBatch,
};
pub use stats::StatsSnapshot;
pub use subscribe::{
    Credit, FrameReceiver, FrameSender, MAX_CREDIT, SubscribeRequest, Subscription, SubscriptionFrame,
    SubscriptionSender,
};
pub use tls::{
    ClusterCa, ClusterTrust, Credentials, Identity, PrincipalName, RevokedSet, Signer, VerifyingKey,
};
