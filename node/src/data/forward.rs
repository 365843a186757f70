//! A replicant's writes: it holds no writable replica, so it hands each publish to a
//! live core site holding a ready replica of the shard and answers with that site's
//! answer, as if the write had been local.
//!
//! A holder that cannot be reached, or that answers that it takes no writes for the
//! shard (a move happened since the view was built), is passed over for the next. A
//! holder that was asked but did not answer ends the attempt with an error: the write
//! may have been stored there, so sending it to another holder could store it twice.

use std::net::SocketAddr;

use cairn_transport::{Endpoint, Request, Response, TransportError, WireError, WireErrorKind};

/// Sends `request` (a publish) to the first of `holders`, starting at `first`, that
/// takes it.
pub async fn forward(
    endpoint: &Endpoint,
    holders: &[SocketAddr],
    first: usize,
    request: &Request,
) -> Response {
    let mut passed = Vec::new();
    for i in 0..holders.len() {
        let holder = holders[(first + i) % holders.len()];
        match endpoint.request(holder, request).await {
            Ok(Response::NotHere { reason, .. }) => passed.push(format!("{holder}: {reason}")),
            Ok(answer) => return answer,
            Err(error @ (TransportError::Unreachable { .. } | TransportError::Backoff { .. })) => {
                passed.push(error.to_string());
            }
            Err(TransportError::Remote { error, .. }) => return Response::Error(error),
            Err(error) => {
                return unavailable(format!(
                    "forwarded to {holder}, which did not answer ({error}); the write may or may not be stored"
                ));
            }
        }
    }
    match passed.is_empty() {
        true => unavailable("no live core site holds a ready replica of the shard".into()),
        false => unavailable(format!("no core site took the write: {}", passed.join("; "))),
    }
}

fn unavailable(message: String) -> Response {
    Response::Error(WireError::new(WireErrorKind::Unavailable, message))
}
