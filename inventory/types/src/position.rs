//! Positions in a shard valid on every replica: where a fetch starts, and the answer
//! when a position needs entries retention removed.

use serde::{Deserialize, Serialize};

use crate::frontier::Frontier;
use crate::ids::SiteId;

/// Where a fetch starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchStart {
    /// At the oldest entry each origin still has here.
    Earliest,
    /// Beyond a position an earlier fetch answered (on any replica).
    After(Frontier),
}

/// A position that needs entries this replica no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "position out of range: entries of origin {origin} from seq {wanted} are gone; the log now starts at seq {starts_at}"
)]
pub struct OutOfRange {
    /// The origin whose entries are gone.
    pub origin: SiteId,
    /// The first seq the position needed.
    pub wanted: u64,
    /// The oldest seq of that origin this replica holds (or will hold next).
    pub starts_at: u64,
    /// The position where this replica's log now starts (for every origin): reading
    /// from it skips, knowingly, what is gone.
    pub start: Frontier,
}
