//! What can go wrong talking to a cluster, as the application needs to tell it apart.

use cairn_transport::TransportError;
use cairn_types::OutOfRange;

use crate::cursor::Cursor;

/// An error of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No site that could answer was reachable (each attempt is named).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The credentials' identity may not do this (the sites' access table).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A read's position needs entries that retention removed. `skip` is the same
    /// position with that shard moved to where its log now starts: reading from it
    /// skips, knowingly, what is gone.
    #[error("out of range: shard {shard}: {gone}")]
    OutOfRange {
        /// The shard.
        shard: u32,
        /// What is gone, and where the log starts now.
        gone: OutOfRange,
        /// The position that skips what is gone.
        skip: Box<Cursor>,
    },
    /// A write was sent but its answer did not come: it may or may not be stored (a
    /// producer retries it safely; a plain publish does not).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A site understood the request and refused it (an unknown db, say).
    #[error("refused: {0}")]
    Rejected(String),
    /// The request is not valid as given (a shard beyond the db's, a message too large,
    /// a damaged cursor).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The producer or subscription this came through was closed.
    #[error("closed: {0}")]
    Closed(String),
    /// Setting up failed (credentials, the local socket).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// The same error, for another waiter (a transport error is kept as its text).
    pub(crate) fn copy(&self) -> Self {
        match self {
            Self::Unreachable(s) => Self::Unreachable(s.clone()),
            Self::Forbidden(s) => Self::Forbidden(s.clone()),
            Self::OutOfRange { shard, gone, skip } => {
                Self::OutOfRange { shard: *shard, gone: gone.clone(), skip: skip.clone() }
            }
            Self::OutcomeUnknown(s) => Self::OutcomeUnknown(s.clone()),
            Self::Rejected(s) => Self::Rejected(s.clone()),
            Self::Invalid(s) => Self::Invalid(s.clone()),
            Self::Closed(s) => Self::Closed(s.clone()),
            Self::Transport(e) => Self::Unreachable(e.to_string()),
        }
    }
}

impl From<cairn_types::ValueError> for Error {
    fn from(error: cairn_types::ValueError) -> Self {
        Self::Invalid(error.to_string())
    }
}

/// The client's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
