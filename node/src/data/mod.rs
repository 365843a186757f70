//! Shard data on a site: writes and reads ([`access`], with group commit in
//! [`appender`]), serving pull streams to other
//! replicas ([`upstream`]), and keeping local replicas filled from theirs
//! ([`replicator`]: catch-up of new replicas, then follow), and applying retention
//! ([`retention`]). [`signals`] wakes follow
//! streams when a log grows; [`throttle`] caps catch-up throughput. A replicant's
//! writes go to a core holder through [`forward`]. [`acks`] keeps what other replicas
//! acknowledged holding, for writes that wait for a quorum.

pub mod access;
pub mod acks;
pub mod admission;
pub mod appender;
pub mod forward;
pub mod replicator;
pub mod retention;
pub mod signals;
pub mod throttle;
pub mod upstream;

use std::time::Duration;

/// Settings of the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataConfig {
    /// Payload bytes per pull batch (an entry larger than this goes alone).
    pub batch_bytes: usize,
    /// Entries per pull batch.
    pub batch_entries: usize,
    /// A follow stream with nothing to send says so this often; a receiver that hears
    /// nothing for three times this long reconnects.
    pub idle_every: Duration,
    /// Catch-up throughput cap for this site, in bytes per second (all streams
    /// together); `None` for no cap. Follow streams of ready replicas are not capped.
    pub catch_up_limit: Option<u64>,
    /// How often the replicator compares the streams it runs with those it should.
    pub reconcile_every: Duration,
    /// Pull streams this site serves to one peer at once; more are refused.
    pub max_pulls_per_peer: usize,
    /// Pull streams this site serves at once, to all peers.
    pub max_pulls: usize,
    /// Payload bytes of batches read for one peer's pull streams and not yet sent; a
    /// stream waits for room before reading more.
    pub pull_bytes_per_peer: usize,
    /// The same, for all peers.
    pub pull_bytes: usize,
    /// A pull stream whose receiver takes no byte for this long is ended.
    pub pull_stall: Duration,
    /// Reads served to one peer at once; more are answered `Busy`.
    pub max_reads_per_peer: usize,
    /// Reads served at once, to all peers.
    pub max_reads: usize,
    /// Long polls and acknowledgement waits one peer may have open at once.
    pub max_waits_per_peer: usize,
    /// The same, for all peers.
    pub max_waits: usize,
    /// Subscriptions one peer may have open at once.
    pub max_subscriptions_per_peer: usize,
    /// The same, for all peers.
    pub max_subscriptions: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            batch_bytes: 256 << 10,
            batch_entries: 8192,
            idle_every: Duration::from_secs(2),
            catch_up_limit: None,
            reconcile_every: Duration::from_millis(500),
            max_pulls_per_peer: 1024,
            max_pulls: 8192,
            pull_bytes_per_peer: 512 << 10,
            pull_bytes: 16 << 20,
            pull_stall: Duration::from_secs(30),
            max_reads_per_peer: 2,
            max_reads: 16,
            max_waits_per_peer: 256,
            max_waits: 4096,
            max_subscriptions_per_peer: 256,
            max_subscriptions: 8192,
        }
    }
}
