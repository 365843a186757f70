//! cairn's gossip: what each site publishes about its inventory (over chitchat, carried
//! by the site's QUIC endpoint), and the typed, eventually consistent cluster view every
//! site rebuilds from what all sites publish.
//!
//! - [`summary`]: keys and values a site owns; pure snapshot → keys, and key diffs;
//! - [`name`]: the short name a site gossips under (half its site id);
//! - [`signed`]: every value signed by its site; checking what peers gossip, pure;
//! - [`view`]: the cluster view, a pure function of chitchat's node states;
//! - [`decoded`]: decoded values kept between view builds (only changed ones decoded);
//! - [`settings`]: which db settings win (creation, changes, drops), pure;
//! - [`carriage`]: chitchat's `Transport` over the site's endpoint;
//! - [`runtime`]: the running gossip: publish, view, change stream, leave.

pub mod carriage;
pub mod decoded;
pub mod name;
pub mod runtime;
pub mod settings;
pub mod signed;
pub mod summary;
pub mod view;

pub use carriage::{GossipCounters, QuicCarriage};
pub use name::GossipName;
pub use runtime::{Gossip, GossipConfig, GossipError};
pub use summary::SiteSnapshot;
pub use view::{ClusterView, SiteState};
