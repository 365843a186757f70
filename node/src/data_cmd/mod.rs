//! `cairn ctl publish` and `cairn ctl read`: write messages by topic and read them back
//! across shards.
//!
//! Both ask the node for the db's routes (its settings and, per shard, the live sites
//! with a ready replica), then talk to a holder of each shard, going on to the next
//! holder when one cannot be reached or answers that it no longer holds the shard.

mod cursor;
mod follow;
mod publish;
mod read;

use std::net::SocketAddr;

use anyhow::bail;
use cairn_inventory::DbName;
use cairn_transport::{Request, Response, Routes, TransportError, WireErrorKind};

use crate::client::Client;

pub(crate) use publish::{PublishArgs, publish};
pub(crate) use read::{ReadArgs, read};

/// The db's routes, as the node sees them.
async fn routes(client: &Client, db: &DbName) -> anyhow::Result<Routes> {
    match client.request(&Request::Routes { db: db.clone() }).await? {
        Response::Routes(routes) => Ok(routes),
        Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
        other => bail!("{} answered routes with {other:?}", client.node()),
    }
}

/// The db's routes from the first of `sites` (then the node) that answers: for a
/// reader whose node went away.
async fn routes_from(client: &Client, db: &DbName, sites: &[SocketAddr]) -> anyhow::Result<Routes> {
    let request = Request::Routes { db: db.clone() };
    let mut failures = Vec::new();
    for at in sites.iter().copied().chain([client.node()]) {
        match attempt(client, at, &request).await {
            Attempt::Answered(Response::Routes(routes)) => return Ok(routes),
            Attempt::Answered(other) => failures.push(format!("{at}: {other:?}")),
            Attempt::Passed(why, _) | Attempt::Unknown(why) => failures.push(why),
        }
    }
    bail!("no site answered with the routes of {db}: {}", failures.join("; "))
}

/// The sites to try for one shard, in order: the node itself first if it holds the
/// shard (fewest hops), then the other holders.
fn candidates(client: &Client, holders: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = holders.to_vec();
    if let Some(i) = out.iter().position(|a| *a == client.node()) {
        out.swap(0, i);
    }
    if out.is_empty() {
        // The node's view names no holder: let the node say where to go.
        out.push(client.node());
    }
    out
}

/// How one attempt at one site ended.
enum Attempt {
    /// An answer to use.
    Answered(Response),
    /// Nothing was done there; try the next site (or one of those it names).
    Passed(String, Vec<SocketAddr>),
    /// The request may have been carried out there (it was sent, no answer came).
    Unknown(String),
}

/// Sends `request` to `at`, classing the outcome.
async fn attempt(client: &Client, at: SocketAddr, request: &Request) -> Attempt {
    match client.endpoint().request(at, request).await {
        Ok(Response::NotHere { reason, holders }) => Attempt::Passed(format!("{at}: {reason}"), holders),
        Ok(answer) => Attempt::Answered(answer),
        Err(error @ (TransportError::Unreachable { .. } | TransportError::Backoff { .. })) => {
            Attempt::Passed(error.to_string(), Vec::new())
        }
        Err(TransportError::Remote { error, .. }) if matches!(error.kind, WireErrorKind::Busy) => {
            Attempt::Passed(format!("{at}: {error}"), Vec::new())
        }
        Err(TransportError::Remote { error, .. }) if error.kind == WireErrorKind::OutcomeUnknown => {
            Attempt::Unknown(format!("{at}: {}", error.message))
        }
        Err(TransportError::Remote { error, .. }) => Attempt::Answered(Response::Error(error)),
        Err(error) => Attempt::Unknown(format!("{at}: {error}")),
    }
}
