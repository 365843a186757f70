//! Response bodies: a whole one (JSON, text), or one streamed from a channel (an NDJSON
//! subscription, a line per message sent by the handler's task).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame};
use tokio::sync::mpsc;

/// Every response's body.
pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed()
}

/// A body streamed from `lines`: it ends when the sender is dropped; when the client
/// goes away, the sender's next send fails and its task ends.
pub(crate) fn streamed(lines: mpsc::Receiver<Bytes>) -> ResponseBody {
    ChannelBody(lines).boxed()
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|bytes| Ok(Frame::data(bytes))))
    }
}
