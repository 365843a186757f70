//! `cairn ctl publish DB [--topic T] [--key K] [--shard K] [--ack A] [MESSAGE]...`.
//!
//! The messages go to one shard: `--shard`, or the one the db's routing gives for the
//! key (or, without one, the topic), through `cairn_client::Client::publish`: in chunks
//! to a holder of the shard, the next holder when one cannot be reached. A chunk whose
//! outcome is unknown (sent, no answer) is sent again elsewhere only with `--producer`,
//! since the producer's numbers make the retry idempotent; without it the command stops
//! and says so.

use std::io::BufRead;

use anyhow::{Context, bail};
use cairn_client::PublishOptions;
use cairn_inventory::{DbName, Message, MessageKey, ProducerName, Topic};
use cairn_transport::Ack;
use clap::Args;
use serde_json::json;

use super::{data_client, explain};
use crate::cli::client::Client;
use crate::cli::inventory::Format;

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
    let key = args.key.as_ref().map(|k| MessageKey::new(k.as_bytes().to_vec())).transpose()?;
    let messages: Vec<Message> = payloads
        .into_iter()
        .map(|payload| Message { topic: args.topic.clone(), key: key.clone(), ts_ms: args.ts_ms, payload })
        .collect();
    let options = PublishOptions {
        ack: args.ack,
        shard: args.shard,
        producer: args.producer.clone().map(|name| (name, args.producer_seq)),
        ack_timeout: client.timeout() * 8 / 10,
    };
    let data = data_client(client);
    let published = data.publish(&args.db, messages, &options).await.map_err(explain)?;
    let (ids, shard) = (&published.ids, published.shard);
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
            let at: Vec<String> = published.sites.iter().map(ToString::to_string).collect();
            let duplicates = ids.iter().filter(|s| s.duplicate).count();
            let note = if duplicates > 0 { format!(" ({duplicates} already stored)") } else { String::new() };
            println!("published {} message(s){note} to {}/{shard} at {}", ids.len(), args.db, at.join(", "));
        }
    }
    Ok(())
}
