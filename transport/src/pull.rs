//! The pull stream protocol: how a replica gets the entries it lacks from an upstream.
//!
//! The receiver opens a bidirectional stream and writes one [`Request::Pull`] frame with
//! its frontier and its resume cursor for that upstream. The upstream answers with a
//! stream of [`PullFrame`]s: one `Start` (what it holds now), then `Batch`es of entries
//! the receiver lacks, each sealed with a CRC32C of its encoded entries. A catch-up
//! stream ends when the upstream has sent everything it held at `Start`; a follow stream
//! stays open, pushing new entries as they are written and an `Idle` frame when there is
//! nothing to send, so a silent upstream is noticed. QUIC flow control is the
//! back-pressure: an upstream writes only as fast as the receiver reads.
//!
//! The receiver keeps its side of the stream open and writes a [`PullAck`] with its
//! frontier after each commit; that is how a writer waiting for `--ack quorum` learns
//! that its entries are held elsewhere.
//!
//! A receiver that finds a bad batch stops the stream and pulls again from what it has
//! stored; nothing of the bad batch is kept. A receiver calls an upstream silent when no
//! byte arrives for a while ([`PullReceiver::next_within`]) — not when a whole frame
//! takes long, which on a slow or lossy path a large batch does.
//!
//! [`Request::Pull`]: crate::Request::Pull

use std::net::SocketAddr;
use std::time::Duration;

use cairn_types::{DbName, Entry, Frontier, SiteId, codec};
use serde::{Deserialize, Serialize};

use crate::error::TransportError;
use crate::frame::{self, FrameError};

/// Stream stop code a receiver uses to refuse a bad batch.
pub const STOP_BAD_BATCH: u32 = 2;
/// Stream stop code a receiver uses when it no longer wants the stream.
pub const STOP_DONE: u32 = 3;
/// Stream reset code of an upstream whose receiver stopped reading.
pub const RESET_STALLED: u32 = 4;

/// What a receiver asks of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The db.
    pub db: DbName,
    /// The shard.
    pub shard: u32,
    /// The receiver's frontier: entries at or below it are not sent.
    pub frontier: Frontier,
    /// The upstream's arrival number to scan from (the receiver's stored cursor).
    pub cursor: u64,
    /// Keep the stream open after the catch-up and push new entries.
    pub follow: bool,
    /// The receiving site.
    pub receiver: SiteId,
    /// The highest seq the receiver had written as origin in this shard when it asked:
    /// its own entries above that are newer than the request, so it holds them.
    pub receiver_own_seq: u64,
}

/// What a receiver sends back on a pull stream after storing: everything it now holds
/// durably, so the upstream can tell a writer waiting for `--ack quorum|all` that its
/// entries are on this replica too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullAck {
    /// The receiver's frontier after its last commit.
    pub held: Frontier,
}

/// One frame an upstream sends on a pull stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullFrame {
    /// The first frame: what the upstream holds as the stream starts.
    Start(PullStart),
    /// Entries the receiver lacks.
    Batch(SealedBatch),
    /// Nothing to send right now (follow streams); the upstream's position.
    Idle {
        /// The upstream's frontier.
        frontier: Frontier,
        /// The arrival number its next entry will get.
        next_arrival: u64,
    },
    /// The upstream will not serve this pull (it holds no replica of the shard, or its
    /// replica is still catching up itself).
    Refused {
        /// Why.
        reason: String,
    },
}

/// The upstream's position when a pull starts: the receiver's catch-up target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStart {
    /// The upstream site.
    pub site: SiteId,
    /// Its frontier.
    pub frontier: Frontier,
    /// The arrival number its next entry will get: the catch-up part of the stream ends
    /// with the batch whose `next` reaches it.
    pub next_arrival: u64,
    /// Entries it holds.
    pub entries: u64,
    /// Payload bytes it holds.
    pub bytes: u64,
}

/// A batch of entries, encoded once and sealed with a CRC32C of the encoding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBatch {
    /// The upstream's arrival number to continue from after this batch.
    pub next: u64,
    /// How many entries `body` holds.
    pub count: u32,
    /// CRC32C of `body`.
    pub crc32c: u32,
    /// The entries, encoded with the inventory's codec.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl std::fmt::Debug for SealedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBatch")
            .field("next", &self.next)
            .field("count", &self.count)
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a batch could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The CRC does not match the bytes.
    #[error("batch checksum mismatch: CRC32C {actual:#010x}, batch says {expected:#010x}")]
    Checksum {
        /// What the batch says.
        expected: u32,
        /// What the bytes give.
        actual: u32,
    },
    /// The bytes do not decode to entries, or not to as many as announced.
    #[error("batch does not decode: {0}")]
    Undecodable(String),
}

impl SealedBatch {
    /// Encodes `entries` and seals them.
    pub fn seal(entries: &[Entry], next: u64) -> Result<Self, TransportError> {
        let body = codec::encode(entries)?;
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        Ok(Self { next, count, crc32c: crc32c::crc32c(&body), body })
    }

    /// Checks the CRC and decodes the entries.
    pub fn open(&self) -> Result<Vec<Entry>, BatchError> {
        let actual = crc32c::crc32c(&self.body);
        if actual != self.crc32c {
            return Err(BatchError::Checksum { expected: self.crc32c, actual });
        }
        let entries: Vec<Entry> =
            codec::decode(&self.body).map_err(|e| BatchError::Undecodable(e.to_string()))?;
        if entries.len() != self.count as usize {
            return Err(BatchError::Undecodable(format!(
                "{} entries, batch says {}",
                entries.len(),
                self.count
            )));
        }
        Ok(entries)
    }

    /// Payload bytes of the batch on the wire.
    pub fn wire_bytes(&self) -> usize {
        self.body.len()
    }
}

/// The upstream's side of a pull stream.
#[derive(Debug)]
pub struct PullSender {
    pub(crate) peer: SocketAddr,
    pub(crate) send: quinn::SendStream,
    /// The receiver's acknowledgements, until taken.
    pub(crate) acks: Option<PullAckReceiver>,
}

/// The upstream's reader of a receiver's [`PullAck`]s.
pub type PullAckReceiver = crate::subscribe::FrameReceiver<PullAck>;

/// The receiver's sender of [`PullAck`]s.
pub type PullAckSender = crate::subscribe::FrameSender<PullAck>;

impl PullSender {
    /// The receiver's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The receiver's acknowledgements (once; `None` after).
    pub fn take_acks(&mut self) -> Option<PullAckReceiver> {
        self.acks.take()
    }

    /// Sends one frame; waits while the receiver's flow-control window is full.
    pub async fn send(&mut self, frame: &PullFrame) -> Result<(), TransportError> {
        let bytes = codec::encode(frame)?;
        let peer = self.peer;
        frame::write_frame(&mut self.send, &bytes).await.map_err(|source| match source {
            FrameError::Io(reason) => TransportError::ConnectionLost { peer, reason },
            source => TransportError::Frame { peer, source },
        })
    }

    /// Sends one frame, as [`Self::send`], but [`TransportError::Timeout`] once the
    /// receiver has taken no byte for `stall` (it stopped reading).
    pub async fn send_within(&mut self, frame: &PullFrame, stall: Duration) -> Result<(), TransportError> {
        let bytes = codec::encode(frame)?;
        let peer = self.peer;
        frame::write_frame_within(&mut self.send, &bytes, stall).await.map_err(|source| match source {
            FrameError::Silent { after } => TransportError::Timeout { peer, after },
            FrameError::Io(reason) => TransportError::ConnectionLost { peer, reason },
            source => TransportError::Frame { peer, source },
        })
    }

    /// Resolves when the receiver stops the stream or the connection ends.
    pub async fn stopped(&mut self) {
        let _ = self.send.stopped().await;
    }

    /// Ends the stream cleanly.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }

    /// Abandons the stream with `code`: whatever is buffered and not yet taken by the
    /// receiver is dropped (for a receiver that stopped reading).
    pub fn reset(mut self, code: u32) {
        let _ = self.send.reset(code.into());
    }
}

/// The receiver's side of a pull stream.
#[derive(Debug)]
pub struct PullReceiver {
    pub(crate) frames: crate::subscribe::FrameReceiver<PullFrame>,
    /// Where acknowledgements go, until taken.
    pub(crate) acks: Option<PullAckSender>,
}

impl PullReceiver {
    /// The upstream's address.
    pub fn peer(&self) -> SocketAddr {
        self.frames.peer
    }

    /// The sender of this stream's acknowledgements (once; `None` after).
    pub fn take_acks(&mut self) -> Option<PullAckSender> {
        self.acks.take()
    }

    /// The next frame; `None` when the upstream ended the stream cleanly.
    pub async fn next(&mut self) -> Result<Option<PullFrame>, TransportError> {
        self.frames.next().await
    }

    /// The next frame, as [`Self::next`], but [`TransportError::Timeout`] once no byte
    /// at all has arrived for `silence` (the frame is then lost: stop the stream).
    pub async fn next_within(&mut self, silence: Duration) -> Result<Option<PullFrame>, TransportError> {
        self.frames.next_within(silence).await
    }

    /// Stops the stream with `code` ([`STOP_BAD_BATCH`] or [`STOP_DONE`]).
    pub fn stop(mut self, code: u32) {
        let _ = self.frames.recv.stop(code.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::EntryId;

    fn entries(n: u64) -> Vec<Entry> {
        (1..=n).map(|seq| Entry::plain(EntryId { origin: SiteId(1), seq }, seq, vec![1; 9])).collect()
    }

    #[test]
    fn sealed_batches_open_to_what_was_sealed() {
        let batch = SealedBatch::seal(&entries(5), 5).unwrap();
        assert_eq!(batch.open().unwrap(), entries(5));
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error() {
        let mut batch = SealedBatch::seal(&entries(5), 5).unwrap();
        let last = batch.body.len() - 1;
        batch.body[last] ^= 1;
        assert!(matches!(batch.open(), Err(BatchError::Checksum { .. })));
    }

    #[test]
    fn a_wrong_count_is_refused() {
        let mut batch = SealedBatch::seal(&entries(5), 5).unwrap();
        batch.count = 6;
        assert!(matches!(batch.open(), Err(BatchError::Undecodable(_))));
    }
}
