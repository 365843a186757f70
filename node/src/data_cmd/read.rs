//! `cairn ctl read DB [--shard K] [--filter F] [--since S] [--from CURSOR] [--max N]
//! [--wait-ms MS] [--follow]`.
//!
//! Reads every shard (or one) in turn, each in its own order, from the position the
//! cursor gives (or the oldest entry), and prints a cursor to resume from. A shard's
//! holder that cannot be reached is passed over for the next: positions are valid on
//! every replica, so nothing is missed or repeated. With `--wait-ms`, a read that finds
//! nothing waits on every shard at once for the first new entry; `--follow` keeps
//! reading (and waiting) until interrupted, riding over site failures and moves.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use cairn_inventory::{DbName, Entry, FetchStart, Frontier, TopicFilter, now_ms};
use cairn_transport::{FetchRequest, Request, Response};
use clap::Args;
use serde_json::json;

use super::cursor::{Cursor, parse_since};
use super::{Attempt, attempt, candidates, routes};
use crate::client::Client;
use crate::inventory_cmd::Format;

/// Entries asked for per fetch.
const PAGE: u32 = 1000;
/// How long a follower's wait on the shards lasts before it looks again.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The db.
    pub(super) db: DbName,
    /// Read only this shard (default: every shard).
    #[arg(long)]
    shard: Option<u32>,
    /// Topic filter: levels separated by `/`, `+` for one level, a last `#` for the rest.
    #[arg(long, default_value = "#")]
    pub(super) filter: TopicFilter,
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

/// One shard being read.
#[derive(Debug)]
pub(super) struct ShardRead {
    pub(super) shard: u32,
    pub(super) holders: Vec<SocketAddr>,
    /// The holder to ask first.
    next: usize,
    pub(super) position: Option<Frontier>,
}

/// What is fixed for the whole command.
pub(super) struct Reading<'a> {
    pub(super) client: &'a Client,
    pub(super) args: &'a ReadArgs,
    pub(super) since_ms: Option<u64>,
    sites: Vec<SocketAddr>,
    printed: u64,
}

pub(crate) async fn read(client: &Client, args: ReadArgs) -> anyhow::Result<()> {
    let since_ms = args.since.as_deref().map(|s| parse_since(s, now_ms())).transpose()?;
    let from = args.from.as_deref().map(Cursor::parse).transpose()?.unwrap_or_default();
    let routes = routes(client, &args.db).await?;
    let shards = routes.settings.shards.get();
    if let Some(bad) = from.0.keys().find(|s| **s >= shards) {
        bail!("the cursor names shard {bad}, but db {} has shards 0..{shards}", args.db);
    }
    let wanted: Vec<u32> = match args.shard {
        Some(shard) if shard >= shards => {
            bail!("db {} has shards 0..{shards}; there is no shard {shard}", args.db)
        }
        Some(shard) => vec![shard],
        None => (0..shards).collect(),
    };
    let mut reads: Vec<ShardRead> = wanted
        .into_iter()
        .map(|shard| ShardRead {
            shard,
            holders: candidates(client, &routes.holders[shard as usize]),
            next: 0,
            position: from.0.get(&shard).cloned(),
        })
        .collect();
    let mut reading = Reading { client, args: &args, since_ms, sites: Vec::new(), printed: 0 };
    let wait = Duration::from_millis(u64::from(args.wait_ms))
        .min(client.timeout().saturating_sub(Duration::from_secs(1)));
    if args.follow && args.max.is_none() {
        return super::follow::follow(&mut reading, &mut reads).await;
    }
    if args.follow {
        return reading.follow(&mut reads).await;
    }
    let got = reading.round(&mut reads).await?;
    if got == 0 && !wait.is_zero() && !reading.full() && reading.wait_any(&mut reads, wait).await? > 0 {
        // What else is there now, on every shard.
        reading.round(&mut reads).await?;
    }
    reading.print_cursor(&reads)
}

impl Reading<'_> {
    /// `--follow --max N`: rounds, and waits when a round brings nothing, until `--max`
    /// entries came; a cursor line after each round that brought entries. (Without
    /// `--max`, following is by subscriptions: [`super::follow`].)
    async fn follow(&mut self, reads: &mut [ShardRead]) -> anyhow::Result<()> {
        let wait = FOLLOW_WAIT.min(self.client.timeout() / 2);
        loop {
            let got = match self.round(reads).await {
                Ok(0) => self.wait_any(reads, wait).await,
                other => other,
            };
            match got {
                Ok(got) => {
                    if got > 0 {
                        self.print_cursor(reads)?;
                    }
                    if self.full() {
                        return Ok(());
                    }
                }
                Err(error) if error.to_string().starts_with("out of range") => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "read failed; looking up the routes again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let mut known: Vec<SocketAddr> =
                        reads.iter().flat_map(|r| r.holders.iter().copied()).collect();
                    known.sort();
                    known.dedup();
                    if let Ok(routes) = super::routes_from(self.client, &self.args.db, &known).await {
                        for read in reads.iter_mut() {
                            read.holders = candidates(self.client, &routes.holders[read.shard as usize]);
                            read.next = 0;
                        }
                    }
                }
            }
        }
    }

    fn full(&self) -> bool {
        self.args.max.is_some_and(|max| self.printed >= max)
    }

    fn request(&self, read: &ShardRead, max: u32, wait_ms: u32) -> Request {
        Request::Fetch(FetchRequest {
            db: self.args.db.clone(),
            shard: read.shard,
            start: read.position.clone().map_or(FetchStart::Earliest, FetchStart::After),
            filter: self.args.filter.clone(),
            since_ms: self.since_ms,
            max_entries: max,
            wait_ms,
        })
    }

    fn page(&self) -> u32 {
        match self.args.max {
            Some(max) => max.saturating_sub(self.printed).min(u64::from(PAGE)) as u32,
            None => PAGE,
        }
    }

    /// Reads every shard up to what its holder has now; answers how many entries came.
    async fn round(&mut self, reads: &mut [ShardRead]) -> anyhow::Result<u64> {
        let before = self.printed;
        for i in 0..reads.len() {
            loop {
                if self.full() {
                    return Ok(self.printed - before);
                }
                let request = self.request(&reads[i], self.page(), 0);
                let token = reads_token(reads);
                let (at, entries, cursor, more) = self.fetch(&mut reads[i], &request, token).await?;
                self.print(reads[i].shard, &entries)?;
                reads[i].position = Some(cursor);
                self.note_site(at);
                if !more {
                    break;
                }
            }
        }
        Ok(self.printed - before)
    }

    /// Asks the shard's holders in turn; answers the first fetch answer.
    async fn fetch(
        &self,
        read: &mut ShardRead,
        request: &Request,
        token: String,
    ) -> anyhow::Result<(SocketAddr, Vec<Entry>, Frontier, bool)> {
        let mut failures = Vec::new();
        let mut tried = 0;
        while tried < read.holders.len() {
            tried += 1;
            let at = read.holders[read.next % read.holders.len()];
            match attempt(self.client, at, request).await {
                Attempt::Answered(Response::Fetched { entries, cursor, more }) => {
                    return Ok((at, entries, cursor, more));
                }
                Attempt::Answered(Response::OutOfRange(gone)) => {
                    let mut skip = Cursor::parse(&token)?;
                    skip.0.insert(read.shard, gone.start.clone());
                    bail!(
                        "out of range: shard {} at {at}: {gone}; to skip what is gone, read --from {}",
                        read.shard,
                        skip.token()
                    );
                }
                Attempt::Answered(Response::Rejected { reason }) => bail!("{at} refused: {reason}"),
                Attempt::Answered(other) => bail!("{at} answered fetch with {other:?}"),
                Attempt::Passed(why, holders) => {
                    failures.push(why);
                    for holder in holders {
                        if !read.holders.contains(&holder) {
                            read.holders.push(holder);
                        }
                    }
                }
                Attempt::Unknown(why) => failures.push(why),
            }
            read.next += 1;
        }
        bail!("no holder of {}/{} answered: {}", self.args.db, read.shard, failures.join("; "))
    }

    /// Waits on every shard at once for new entries (up to `wait`); takes the first
    /// answer that brings some. Answers how many came.
    async fn wait_any(&mut self, reads: &mut [ShardRead], wait: Duration) -> anyhow::Result<u64> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, read) in reads.iter().enumerate() {
            let at = read.holders[read.next % read.holders.len()];
            let request = self.request(read, self.page(), wait_ms);
            let endpoint = self.client.endpoint().clone();
            tasks.spawn(async move { (i, at, endpoint.request(at, &request).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((i, at, answer)) = done else { continue };
            match answer {
                Ok(Response::Fetched { entries, cursor, .. }) if !entries.is_empty() => {
                    tasks.abort_all();
                    self.print(reads[i].shard, &entries)?;
                    reads[i].position = Some(cursor);
                    self.note_site(at);
                    return Ok(entries.len() as u64);
                }
                Ok(_) => {}
                // The next round asks another holder.
                Err(_) => reads[i].next += 1,
            }
        }
        Ok(0)
    }

    pub(super) fn note_site(&mut self, at: SocketAddr) {
        if !self.sites.contains(&at) {
            self.sites.push(at);
        }
    }

    pub(super) fn print(&mut self, shard: u32, entries: &[Entry]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for e in entries {
            match self.args.format {
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

    pub(super) fn print_cursor(&self, reads: &[ShardRead]) -> anyhow::Result<()> {
        let token = reads_token(reads);
        match self.args.format {
            Format::Json => {
                let sites: Vec<String> = self.sites.iter().map(ToString::to_string).collect();
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", json!({"cursor": token, "sites": sites}))?;
                out.flush()?;
            }
            // Messages only, for pipes; json carries the cursor.
            Format::Table => {}
        }
        Ok(())
    }
}

/// The token of every shard's position so far (shards not read yet: absent).
pub(super) fn reads_token(reads: &[ShardRead]) -> String {
    let mut cursor = Cursor::default();
    for read in reads {
        if let Some(position) = &read.position {
            cursor.0.insert(read.shard, position.clone());
        }
    }
    cursor.token()
}
