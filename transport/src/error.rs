//! The transport's error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_types::codec::CodecError;

use crate::frame::FrameError;
use crate::message::WireError;

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Certificates or keys could not be made, read or used.
    #[error("tls: {0}")]
    Tls(String),
    /// A file-system error around credentials.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A setting out of its allowed range.
    #[error("invalid transport setting {what}: {why}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// The rule it breaks.
        why: String,
    },
    /// No connection could be made to the peer.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// Why (refused certificate, timeout, …).
        reason: String,
    },
    /// The last attempt to reach the peer failed recently; the next one waits.
    #[error("{peer} is unreachable (last attempt: {last_error}); next attempt in {retry_in:?}")]
    Backoff {
        /// The peer.
        peer: SocketAddr,
        /// Why the last attempt failed.
        last_error: String,
        /// When the next attempt may be made.
        retry_in: Duration,
    },
    /// The peer did not answer within the request deadline.
    #[error("{peer} did not answer within {after:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// The deadline.
        after: Duration,
    },
    /// The connection broke during the request.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: SocketAddr,
        /// What quinn said.
        reason: String,
    },
    /// A frame could not be read.
    #[error("bad frame from {peer}: {source}")]
    Frame {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong.
        source: FrameError,
    },
    /// A message could not be encoded or decoded.
    #[error("message: {0}")]
    Codec(#[from] CodecError),
    /// The peer answered with an error.
    #[error("{peer} answered: {error}")]
    Remote {
        /// The peer.
        peer: SocketAddr,
        /// Its error.
        error: WireError,
    },
    /// The endpoint is shutting down.
    #[error("endpoint closed")]
    Closed,
}
