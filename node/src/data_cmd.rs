//! `cairn ctl publish` and `cairn ctl read`: write to and read from a shard.
//!
//! A site without a writable (or readable) replica of the shard answers with the sites
//! that have one; the command goes there, as a client library would.

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use cairn_inventory::{DbName, EntryId, MAX_PAYLOAD};
use cairn_transport::{Request, Response};
use clap::Args;
use serde_json::json;

use crate::client::Client;
use crate::inventory_cmd::Format;

/// Messages per publish request.
const CHUNK_MESSAGES: usize = 1000;
/// Payload bytes per publish request (about).
const CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The db.
    db: DbName,
    /// The shard.
    #[arg(long)]
    shard: u32,
    /// Messages to write, in order; none: read them from stdin, one a line.
    messages: Vec<String>,
    /// Output format (json lists the ids).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The db.
    db: DbName,
    /// The shard.
    #[arg(long)]
    shard: u32,
    /// The cursor to read from (0: the start; a previous read's `next`).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// At most this many entries (the site answers at most 10,000 per request).
    #[arg(long, default_value_t = 100)]
    max: u32,
    /// Output format: one message a line, or json with ids and the next cursor.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Sends `request` to the node, following a `NotHere` answer to the sites it names.
async fn request_following(client: &Client, request: &Request) -> anyhow::Result<(SocketAddr, Response)> {
    let mut at = client.node();
    let mut tried = vec![at];
    loop {
        match client.request_at(at, request).await? {
            Response::NotHere { reason, holders } => {
                let Some(next) = holders.into_iter().find(|h| !tried.contains(h)) else {
                    bail!("{at}: {reason}; no other site with a ready replica is known");
                };
                tracing::debug!(%at, %reason, %next, "going to a holder");
                tried.push(next);
                at = next;
            }
            Response::Rejected { reason } => bail!("{at} refused: {reason}"),
            response => return Ok((at, response)),
        }
    }
}

pub(crate) async fn publish(client: &Client, args: PublishArgs) -> anyhow::Result<()> {
    let messages: Vec<Vec<u8>> = if args.messages.is_empty() {
        let stdin = std::io::stdin();
        let mut lines = Vec::new();
        for line in stdin.lock().lines() {
            lines.push(line.context("reading messages from stdin")?.into_bytes());
        }
        lines
    } else {
        args.messages.into_iter().map(String::into_bytes).collect()
    };
    if messages.is_empty() {
        bail!("nothing to publish: give messages as arguments or on stdin, one a line");
    }
    if let Some(m) = messages.iter().find(|m| m.len() > MAX_PAYLOAD) {
        bail!("a message of {} bytes is over the limit of {MAX_PAYLOAD}", m.len());
    }
    let mut ids: Vec<EntryId> = Vec::with_capacity(messages.len());
    let mut sites = Vec::new();
    let mut rest = &messages[..];
    while !rest.is_empty() {
        let (mut n, mut bytes) = (0, 0);
        while n < rest.len() && n < CHUNK_MESSAGES && (n == 0 || bytes + rest[n].len() <= CHUNK_BYTES) {
            bytes += rest[n].len();
            n += 1;
        }
        let chunk = rest[..n].iter().map(|m| serde_bytes::ByteBuf::from(m.clone())).collect();
        let request = Request::Publish { db: args.db.clone(), shard: args.shard, messages: chunk };
        match request_following(client, &request).await? {
            (at, Response::Published { ids: got }) => {
                ids.extend(got);
                if !sites.contains(&at) {
                    sites.push(at);
                }
            }
            (at, other) => bail!("{at} answered publish with {other:?}"),
        }
        rest = &rest[n..];
    }
    match args.format {
        Format::Json => {
            let ids: Vec<_> =
                ids.iter().map(|id| json!({"origin": id.origin.to_string(), "seq": id.seq})).collect();
            println!("{}", json!({"db": args.db.as_str(), "shard": args.shard, "ids": ids}));
        }
        Format::Table => {
            let at: Vec<String> = sites.iter().map(ToString::to_string).collect();
            println!("published {} message(s) to {}/{} at {}", ids.len(), args.db, args.shard, at.join(", "));
        }
    }
    Ok(())
}

pub(crate) async fn read(client: &Client, args: ReadArgs) -> anyhow::Result<()> {
    let request = Request::Read { db: args.db.clone(), shard: args.shard, from: args.from, max: args.max };
    let (at, response) = request_following(client, &request).await?;
    let Response::Entries { entries, next, start } = response else {
        bail!("{at} answered read with {response:?}")
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let entries: Vec<_> = entries
                .iter()
                .map(|e| {
                    json!({
                        "arrival": e.arrival,
                        "origin": e.entry.id.origin.to_string(),
                        "seq": e.entry.id.seq,
                        "origin_ms": e.entry.origin_ms,
                        "message": String::from_utf8_lossy(&e.entry.payload),
                    })
                })
                .collect();
            writeln!(
                out,
                "{}",
                json!({"site": at.to_string(), "entries": entries, "next": next, "start": start})
            )?;
        }
        Format::Table => {
            if args.from < start {
                eprintln!(
                    "the log of {}/{} at {at} now starts at arrival {start}: entries before it were removed",
                    args.db, args.shard
                );
            }
            for e in &entries {
                out.write_all(&e.entry.payload)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
