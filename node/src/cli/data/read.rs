//! `cairn ctl read DB [--shard K] [--filter F] [--since S] [--from CURSOR] [--max N]
//! [--wait-ms MS] [--follow]`.
//!
//! Reads every shard (or one) in turn, each in its own order, from the position the
//! cursor gives (or the oldest entry), and prints a cursor to resume from — through
//! `cairn_client::Client::read`: a shard's holder that cannot be reached is passed over
//! for the next, and positions are valid on every replica, so nothing is missed or
//! repeated. With `--wait-ms`, a read that finds nothing waits on every shard at once for
//! the first new entry; `--follow` subscribes to every shard (`Client::subscribe`) and
//! prints entries as they come until interrupted (or `--max`), riding over site failures
//! and moves, each batch granted back to the sites once printed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use cairn_client::{Cursor, Delivered, ReadOptions, SubscribeOptions};
use cairn_inventory::{DbName, TopicFilter, now_ms};
use clap::Args;
use serde_json::json;

use super::{data_client, explain};
use crate::cli::client::Client;
use crate::cli::inventory::Format;

/// Entries asked for per read call.
const PAGE: usize = 10_000;

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The db.
    db: DbName,
    /// Read only this shard (default: every shard).
    #[arg(long)]
    shard: Option<u32>,
    /// Topic filter: levels separated by `/`, `+` for one level, a last `#` for the rest.
    #[arg(long, default_value = "#")]
    filter: TopicFilter,
    /// Only messages stamped since: a duration back from now (90s, 10m, 2h) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Resume from this cursor (what an earlier read printed).
    #[arg(long, value_name = "CURSOR")]
    from: Option<String>,
    /// At most this many entries, over all shards.
    #[arg(long)]
    max: Option<u64>,
    /// If nothing is there, wait up to this long for the first new entry.
    #[arg(long, default_value_t = 0)]
    wait_ms: u32,
    /// Keep reading new entries until interrupted.
    #[arg(long)]
    follow: bool,
    /// Output format: one message a line, or json lines: one per entry, then
    /// `{"cursor", "sites"}` (the position to resume from with --from).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

impl ReadArgs {
    /// Whether the read follows (streams until interrupted): not bounded by --timeout.
    pub(crate) fn follows(&self) -> bool {
        self.follow
    }
}

pub(crate) async fn read(client: &Client, args: ReadArgs) -> anyhow::Result<()> {
    let since_ms = args
        .since
        .as_deref()
        .map(|s| cairn_node::since::parse_since(s, now_ms()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let from = args.from.as_deref().map(Cursor::parse).transpose().map_err(explain)?.unwrap_or_default();
    let data = data_client(client);
    let mut out = Printer { format: args.format, sites: Vec::new(), printed: 0 };
    if args.follow {
        let options = SubscribeOptions {
            filter: args.filter.clone(),
            since_ms,
            shard: args.shard,
            ..Default::default()
        };
        let mut subscription = data.subscribe(&args.db, from, &options).await.map_err(explain)?;
        while args.max.is_none_or(|max| out.printed < max) {
            let Some(delivered) = subscription.next().await else { break };
            out.entries(&[delivered.map_err(explain)?])?;
            if subscription.buffered() == 0 || args.max.is_some_and(|max| out.printed >= max) {
                out.cursor(subscription.cursor())?;
            }
        }
        return Ok(());
    }
    let wait = Duration::from_millis(u64::from(args.wait_ms))
        .min(client.timeout().saturating_sub(Duration::from_secs(1)));
    let mut cursor = from;
    let mut first = true;
    loop {
        let left = args.max.map_or(PAGE, |max| usize::try_from(max - out.printed).unwrap_or(PAGE).min(PAGE));
        let options = ReadOptions {
            filter: args.filter.clone(),
            since_ms,
            shard: args.shard,
            max: left,
            wait: if first { wait } else { Duration::ZERO },
        };
        first = false;
        let batch = data.read(&args.db, &cursor, &options).await.map_err(explain)?;
        let got = batch.entries.len();
        out.entries(&batch.entries)?;
        out.note_sites(&batch.sites);
        cursor = batch.cursor;
        if got < left || args.max.is_some_and(|max| out.printed >= max) {
            break;
        }
    }
    out.cursor(&cursor)
}

/// Prints entries and cursors in the chosen format.
struct Printer {
    format: Format,
    sites: Vec<SocketAddr>,
    printed: u64,
}

impl Printer {
    fn note_sites(&mut self, sites: &[SocketAddr]) {
        for site in sites {
            if !self.sites.contains(site) {
                self.sites.push(*site);
            }
        }
    }

    fn entries(&mut self, entries: &[Delivered]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for Delivered { shard, entry: e } in entries {
            match self.format {
                Format::Json => {
                    let line = json!({
                        "topic": e.topic.as_str(),
                        "key": e.key.as_ref().map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()),
                        "ts_ms": e.origin_ms,
                        "shard": shard,
                        "origin": e.id.origin.to_string(),
                        "seq": e.id.seq,
                        "message": String::from_utf8_lossy(&e.payload),
                    });
                    writeln!(out, "{line}")?;
                }
                Format::Table => {
                    out.write_all(&e.payload)?;
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
        self.printed += entries.len() as u64;
        Ok(())
    }

    /// The position to resume from (json only: table output is messages only, for pipes).
    fn cursor(&self, cursor: &Cursor) -> anyhow::Result<()> {
        if let Format::Json = self.format {
            let sites: Vec<String> = self.sites.iter().map(ToString::to_string).collect();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", json!({"cursor": cursor.token(), "sites": sites}))?;
            out.flush()?;
        }
        Ok(())
    }
}
