//! `cairn ctl publish DB [--topic T] [--key K] [--shard K] [--ack A] [MESSAGE]...`.
//!
//! The messages go to one shard: `--shard`, or the one the db's routing gives for the
//! key (or, without one, the topic). They are sent in chunks to a holder of the shard;
//! a holder that cannot be reached is passed over for the next. A chunk whose outcome
//! is unknown (sent, no answer) is sent again elsewhere only with `--producer`, since
//! the producer's numbers make the retry idempotent; without it the command stops and
//! says so.

use std::io::BufRead;

use anyhow::{Context, bail};
use cairn_inventory::{DbName, MAX_PAYLOAD, Message, MessageKey, ProducerName, Stored, Topic};
use cairn_transport::{Ack, Request, Response, WriteRequest};
use clap::Args;
use serde_json::json;

use super::{Attempt, attempt, candidates, routes};
use crate::client::Client;
use crate::inventory_cmd::Format;

/// Messages per write request.
const CHUNK_MESSAGES: usize = 1000;
/// Payload bytes per write request (about).
const CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The db.
    db: DbName,
    /// The messages' topic (`/`-separated levels; no `+` or `#`).
    #[arg(long, default_value = "")]
    topic: Topic,
    /// The messages' key: routes them instead of the topic (one key, one shard).
    #[arg(long)]
    key: Option<String>,
    /// Write to this shard, whatever the routing says.
    #[arg(long)]
    shard: Option<u32>,
    /// Answer once the messages are durable here (`local`), on a majority of the db's
    /// replication factor (`quorum`), or on every ready replica (`all`).
    #[arg(long, default_value = "local")]
    ack: Ack,
    /// Name this writer for idempotent retries: a message the shard holds under the
    /// same name and number is not stored again.
    #[arg(long)]
    producer: Option<ProducerName>,
    /// The writer's number for the first message (the others follow on).
    #[arg(long, default_value_t = 1, requires = "producer")]
    producer_seq: u64,
    /// The messages' timestamp (ms since the Unix epoch); default: the origin's clock.
    #[arg(long)]
    ts_ms: Option<u64>,
    /// Messages to write, in order; none: read them from stdin, one a line.
    messages: Vec<String>,
    /// Output format (json lists the ids).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub(crate) async fn publish(client: &Client, args: PublishArgs) -> anyhow::Result<()> {
    let payloads: Vec<Vec<u8>> = if args.messages.is_empty() {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line.context("reading messages from stdin")?.into_bytes());
        }
        lines
    } else {
        args.messages.iter().map(|m| m.clone().into_bytes()).collect()
    };
    if payloads.is_empty() {
        bail!("nothing to publish: give messages as arguments or on stdin, one a line");
    }
    if let Some(m) = payloads.iter().find(|m| m.len() > MAX_PAYLOAD) {
        bail!("a message of {} bytes is over the limit of {MAX_PAYLOAD}", m.len());
    }
    let key = args.key.as_ref().map(|k| MessageKey::new(k.as_bytes().to_vec())).transpose()?;
    let routes = routes(client, &args.db).await?;
    let shards = routes.settings.shards.get();
    let shard = match args.shard {
        Some(shard) if shard >= shards => {
            bail!("db {} has shards 0..{shards}; there is no shard {shard}", args.db)
        }
        Some(shard) => shard,
        None => routes.settings.routing.shard(&args.topic, key.as_ref(), shards),
    };
    let holders = candidates(client, &routes.holders[shard as usize]);
    let messages: Vec<Message> = payloads
        .into_iter()
        .map(|payload| Message { topic: args.topic.clone(), key: key.clone(), ts_ms: args.ts_ms, payload })
        .collect();
    let ack_timeout_ms = u32::try_from(client.timeout().as_millis() * 8 / 10).unwrap_or(u32::MAX);
    let (mut ids, mut sites): (Vec<Stored>, Vec<std::net::SocketAddr>) = (Vec::new(), Vec::new());
    let mut start = 0;
    let mut next_holder = 0;
    while start < messages.len() {
        let (mut n, mut bytes) = (0, 0);
        while start + n < messages.len()
            && n < CHUNK_MESSAGES
            && (n == 0 || bytes + messages[start + n].payload.len() <= CHUNK_BYTES)
        {
            bytes += messages[start + n].payload.len();
            n += 1;
        }
        let producer = args.producer.clone().map(|name| (name, args.producer_seq + start as u64));
        let request = Request::Write(WriteRequest {
            db: args.db.clone(),
            shard,
            messages: messages[start..start + n].to_vec(),
            producer,
            ack: args.ack,
            ack_timeout_ms,
        });
        let mut failures = Vec::new();
        let answered = loop {
            if failures.len() >= holders.len() {
                bail!("no holder of {}/{shard} took the write: {}", args.db, failures.join("; "));
            }
            let at = holders[next_holder % holders.len()];
            match attempt(client, at, &request).await {
                Attempt::Answered(answer) => break (at, answer),
                Attempt::Passed(why, _) => failures.push(why),
                Attempt::Unknown(why) if args.producer.is_some() => failures.push(why),
                Attempt::Unknown(why) => bail!(
                    "outcome unknown: {why}; {} message(s) from #{start} may or may not be stored \
                     (use --producer to make retries safe)",
                    n
                ),
            }
            next_holder += 1;
        };
        match answered {
            (at, Response::Written { ids: got }) => {
                ids.extend(got);
                if !sites.contains(&at) {
                    sites.push(at);
                }
            }
            (at, Response::Rejected { reason }) => bail!("{at} refused: {reason}"),
            (at, other) => bail!("{at} answered write with {other:?}"),
        }
        start += n;
    }
    match args.format {
        Format::Json => {
            let ids: Vec<_> = ids
                .iter()
                .map(|s| {
                    let mut id = json!({"origin": s.id.origin.to_string(), "seq": s.id.seq});
                    if s.duplicate {
                        id["duplicate"] = json!(true);
                    }
                    id
                })
                .collect();
            println!("{}", json!({"db": args.db.as_str(), "shard": shard, "ids": ids}));
        }
        Format::Table => {
            let at: Vec<String> = sites.iter().map(ToString::to_string).collect();
            let duplicates = ids.iter().filter(|s| s.duplicate).count();
            let note = if duplicates > 0 { format!(" ({duplicates} already stored)") } else { String::new() };
            println!("published {} message(s){note} to {}/{shard} at {}", ids.len(), args.db, at.join(", "));
        }
    }
    Ok(())
}
