//! Subscriptions: one shard's matching entries pushed to a reader as they arrive, over
//! one bidirectional stream, with a credit window.
//!
//! The reader opens a stream and writes one [`Request::Subscribe`] frame: where to
//! start, the filter, and its first credit (how many entries it will take). The site
//! answers with [`SubscriptionFrame`]s: `Entries` (never more than the credit left, each
//! with the position after it), `Idle` now and then when there is nothing to send (so a
//! silent site is noticed), or one last `OutOfRange` or `Refused`. The reader writes a
//! [`Credit`] frame for each batch it has handled; a reader that stops granting credit
//! is paused — nothing is buffered for it beyond what it allowed. The position in each
//! frame is valid on every replica, so a reader whose site goes away subscribes
//! elsewhere from the last one it handled.
//!
//! [`Request::Subscribe`]: crate::Request::Subscribe

use std::net::SocketAddr;
use std::time::Duration;

use cairn_types::{DbName, Entry, FetchStart, Frontier, OutOfRange, TopicFilter, codec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::TransportError;
use crate::frame::{self, FrameError};

/// The most entries a reader may have granted and not yet received.
pub const MAX_CREDIT: u32 = 100_000;

/// What a reader asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
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
    /// How many entries the site may send before the reader grants more.
    pub credit: u32,
}

/// One frame a site sends on a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionFrame {
    /// Matching entries, and the position after them.
    Entries {
        /// The entries (each origin's in seq order).
        entries: Vec<Entry>,
        /// The position to resume from, here or on another replica.
        cursor: Frontier,
    },
    /// Nothing to send now (no new entry, or no credit); the position so far.
    Idle {
        /// The position to resume from.
        cursor: Frontier,
    },
    /// The start needs entries retention removed; the subscription ends.
    OutOfRange(OutOfRange),
    /// The site does not serve this subscription (no readable replica here, too many
    /// subscriptions); the subscription ends. `holders`: where to go instead.
    Refused {
        /// Why.
        reason: String,
        /// Sites with a ready replica, by the site's view.
        holders: Vec<SocketAddr>,
    },
}

/// A reader's grant of more entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// How many more entries it takes.
    pub entries: u32,
}

/// Frames of one type read from a stream.
#[derive(Debug)]
pub struct FrameReceiver<T> {
    pub(crate) peer: SocketAddr,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) max_frame: usize,
    pub(crate) _frames: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> FrameReceiver<T> {
    /// The next frame; `None` when the other side finished the stream.
    pub async fn next(&mut self) -> Result<Option<T>, TransportError> {
        let frame = frame::read_frame(&mut self.recv, self.max_frame).await;
        self.decode(frame)
    }

    /// The next frame, or [`TransportError::Timeout`] once no byte has come for `silence`.
    pub async fn next_within(&mut self, silence: Duration) -> Result<Option<T>, TransportError> {
        let frame = frame::read_frame_within(&mut self.recv, self.max_frame, silence).await;
        self.decode(frame)
    }

    fn decode(&self, frame: Result<Option<Vec<u8>>, FrameError>) -> Result<Option<T>, TransportError> {
        let peer = self.peer;
        let frame = frame.map_err(|source| match source {
            FrameError::Silent { after } => TransportError::Timeout { peer, after },
            FrameError::Io(reason) => TransportError::ConnectionLost { peer, reason },
            source => TransportError::Frame { peer, source },
        })?;
        frame.map(|bytes| codec::decode(&bytes).map_err(TransportError::from)).transpose()
    }
}

/// Frames of one type written to a stream.
#[derive(Debug)]
pub struct FrameSender<T> {
    pub(crate) peer: SocketAddr,
    pub(crate) send: quinn::SendStream,
    pub(crate) _frames: std::marker::PhantomData<fn(T)>,
}

impl<T: Serialize> FrameSender<T> {
    /// The other side's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one frame; waits while the other side's flow-control window is full.
    pub async fn send(&mut self, frame: &T) -> Result<(), TransportError> {
        let bytes = codec::encode(frame)?;
        let peer = self.peer;
        frame::write_frame(&mut self.send, &bytes).await.map_err(|source| match source {
            FrameError::Io(reason) => TransportError::ConnectionLost { peer, reason },
            source => TransportError::Frame { peer, source },
        })
    }

    /// Ends the stream cleanly.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }
}

/// The site's side of a subscription: frames out, credits in.
#[derive(Debug)]
pub struct SubscriptionSender {
    /// Where the frames go.
    pub frames: FrameSender<SubscriptionFrame>,
    /// The reader's credits.
    pub credits: FrameReceiver<Credit>,
}

/// The reader's side of a subscription.
#[derive(Debug)]
pub struct Subscription {
    /// The site's frames.
    pub frames: FrameReceiver<SubscriptionFrame>,
    /// Where credits go.
    pub credits: FrameSender<Credit>,
}

impl Subscription {
    /// The next frame; `None` when the site ended the subscription.
    pub async fn next_within(
        &mut self,
        silence: Duration,
    ) -> Result<Option<SubscriptionFrame>, TransportError> {
        self.frames.next_within(silence).await
    }

    /// Grants `entries` more.
    pub async fn credit(&mut self, entries: u32) -> Result<(), TransportError> {
        self.credits.send(&Credit { entries }).await
    }
}
