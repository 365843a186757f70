//! Reading a db across shards by topic filter and start time, from a [`Cursor`], with
//! an optional wait for new entries (long poll).
//!
//! Each shard is read in its own order from its position in the cursor; positions are
//! valid on every replica, so a holder that cannot be reached is passed over for the
//! next without missing or repeating an entry.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_transport::{FetchRequest, Request, Response, Routes};
use cairn_types::{DbName, Entry, FetchStart, Frontier, TopicFilter};

use crate::client::{Attempt, Client, classify, unexpected};
use crate::cursor::Cursor;
use crate::error::{Error, Result};

/// Entries asked for per fetch, at most.
const PAGE: usize = 1000;

/// What a read looks for.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Which topics (`#`, every topic, by default).
    pub filter: TopicFilter,
    /// Only entries stamped at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only this shard (default: every shard).
    pub shard: Option<u32>,
    /// At most this many entries, over all shards.
    pub max: usize,
    /// When nothing is there, wait up to this long for the first new entry (on every
    /// shard at once).
    pub wait: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self { filter: TopicFilter::all(), since_ms: None, shard: None, max: 10_000, wait: Duration::ZERO }
    }
}

/// An entry, with the shard it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The shard.
    pub shard: u32,
    /// The entry (topic, key, timestamp, id, payload).
    pub entry: Entry,
}

/// What a read brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// The entries, shard by shard, each shard in its order.
    pub entries: Vec<Delivered>,
    /// Where to read from next (on any replica).
    pub cursor: Cursor,
    /// The sites that answered.
    pub sites: Vec<SocketAddr>,
}

impl Client {
    /// Reads `db` from `from`: every shard (or one) up to what its holder has now, at
    /// most `options.max` entries; if none are there and `options.wait` is set, waits
    /// for the first new one.
    ///
    /// ```no_run
    /// # async fn example(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
    /// use cairn_client::{Cursor, ReadOptions, TopicFilter};
    /// let options = ReadOptions { filter: TopicFilter::new("sensors/+/temp")?, ..Default::default() };
    /// let mut cursor = Cursor::default();
    /// loop {
    ///     let batch = client.read(&"demo".parse()?, &cursor, &options).await?;
    ///     for delivered in &batch.entries {
    ///         println!("{}: {:?}", delivered.entry.topic, delivered.entry.payload);
    ///     }
    ///     cursor = batch.cursor;
    ///     if batch.entries.is_empty() { break; }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read(&self, db: &DbName, from: &Cursor, options: &ReadOptions) -> Result<ReadBatch> {
        let routes = self.routes(db).await?;
        let shards = shards_to_read(db, &routes, from, options.shard)?;
        let mut batch = ReadBatch { entries: Vec::new(), cursor: from.clone(), sites: Vec::new() };
        self.round(db, &shards, options, &mut batch).await?;
        if batch.entries.is_empty() && !options.wait.is_zero() && options.max > 0 {
            self.wait_any(db, &shards, options, &mut batch).await?;
            if !batch.entries.is_empty() {
                // What else is there now, on every shard.
                self.round(db, &shards, options, &mut batch).await?;
            }
        }
        Ok(batch)
    }

    /// Reads every shard up to what its holder has now (within `options.max`).
    async fn round(
        &self,
        db: &DbName,
        shards: &[u32],
        options: &ReadOptions,
        batch: &mut ReadBatch,
    ) -> Result<()> {
        for &shard in shards {
            loop {
                let left = options.max.saturating_sub(batch.entries.len());
                if left == 0 {
                    return Ok(());
                }
                let request = fetch_request(db, shard, batch.cursor.shard(shard), options, left.min(PAGE), 0);
                let (at, entries, position, more) = self.fetch(db, shard, &request, &batch.cursor).await?;
                batch.entries.extend(entries.into_iter().map(|entry| Delivered { shard, entry }));
                batch.cursor.0.insert(shard, position);
                if !batch.sites.contains(&at) {
                    batch.sites.push(at);
                }
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One fetch of one shard, from its holders in turn (routes asked again once when
    /// every holder passed).
    async fn fetch(
        &self,
        db: &DbName,
        shard: u32,
        request: &Request,
        cursor: &Cursor,
    ) -> Result<(SocketAddr, Vec<Entry>, Frontier, bool)> {
        let mut failures = Vec::new();
        for pass in 0..2 {
            if pass == 1 {
                self.forget_routes(db);
            }
            let routes = self.routes(db).await?;
            let mut holders = self.holders(&routes, shard);
            let mut i = 0;
            while i < holders.len() {
                let at = holders[i];
                i += 1;
                match self.attempt(at, request).await {
                    Attempt::Answered(Response::Fetched { entries, cursor, more }) => {
                        return Ok((at, entries, cursor, more));
                    }
                    Attempt::Answered(Response::OutOfRange(gone)) => {
                        return Err(out_of_range(shard, gone, cursor));
                    }
                    Attempt::Answered(Response::Rejected { reason }) => return Err(Error::Rejected(reason)),
                    Attempt::Answered(other) => return Err(unexpected("fetch", at, other)),
                    Attempt::Failed(error) => return Err(error),
                    Attempt::Passed(why, elsewhere) => {
                        failures.push(why);
                        holders.extend(
                            elsewhere.into_iter().filter(|h| !holders.contains(h)).collect::<Vec<_>>(),
                        );
                    }
                    // A read changes nothing: an unknown outcome is only a failed attempt.
                    Attempt::Unknown(why) => failures.push(why),
                }
            }
        }
        Err(Error::Unreachable(format!("no holder of {db}/{shard} answered: {}", failures.join("; "))))
    }

    /// Waits on every shard at once (up to `options.wait`) and takes the first answer
    /// that brings entries.
    async fn wait_any(
        &self,
        db: &DbName,
        shards: &[u32],
        options: &ReadOptions,
        batch: &mut ReadBatch,
    ) -> Result<()> {
        let routes = self.routes(db).await?;
        let wait_ms = u32::try_from(options.wait.as_millis()).unwrap_or(u32::MAX);
        let mut tasks = tokio::task::JoinSet::new();
        for &shard in shards {
            let Some(at) = self.holders(&routes, shard).first().copied() else { continue };
            let request =
                fetch_request(db, shard, batch.cursor.shard(shard), options, PAGE.min(options.max), wait_ms);
            let endpoint = self.endpoint().clone();
            tasks.spawn(async move { (shard, at, classify(at, endpoint.request(at, &request).await)) });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((shard, at, answer)) = done else { continue };
            match answer {
                Attempt::Answered(Response::Fetched { entries, cursor, .. }) if !entries.is_empty() => {
                    tasks.abort_all();
                    batch.entries.extend(entries.into_iter().map(|entry| Delivered { shard, entry }));
                    batch.cursor.0.insert(shard, cursor);
                    if !batch.sites.contains(&at) {
                        batch.sites.push(at);
                    }
                    return Ok(());
                }
                Attempt::Answered(Response::OutOfRange(gone)) => {
                    return Err(out_of_range(shard, gone, &batch.cursor));
                }
                Attempt::Failed(error) => return Err(error),
                // Nothing came, or the site failed: the caller's next read asks again.
                _ => {}
            }
        }
        Ok(())
    }
}

/// The shards a read covers, checking the cursor and the shard asked for.
fn shards_to_read(db: &DbName, routes: &Routes, from: &Cursor, shard: Option<u32>) -> Result<Vec<u32>> {
    let shards = routes.settings.shards.get();
    if let Some(bad) = from.0.keys().find(|s| **s >= shards) {
        return Err(Error::Invalid(format!(
            "the cursor names shard {bad}, but db {db} has shards 0..{shards}"
        )));
    }
    match shard {
        Some(shard) if shard >= shards => {
            Err(Error::Invalid(format!("db {db} has shards 0..{shards}; there is no shard {shard}")))
        }
        Some(shard) => Ok(vec![shard]),
        None => Ok((0..shards).collect()),
    }
}

fn fetch_request(
    db: &DbName,
    shard: u32,
    position: Option<&Frontier>,
    options: &ReadOptions,
    max: usize,
    wait_ms: u32,
) -> Request {
    Request::Fetch(FetchRequest {
        db: db.clone(),
        shard,
        start: position.cloned().map_or(FetchStart::Earliest, FetchStart::After),
        filter: options.filter.clone(),
        since_ms: options.since_ms,
        max_entries: u32::try_from(max).unwrap_or(u32::MAX),
        wait_ms,
    })
}

/// The out-of-range error for `shard`, with the cursor that skips what is gone.
pub(crate) fn out_of_range(shard: u32, gone: cairn_types::OutOfRange, cursor: &Cursor) -> Error {
    let mut skip = cursor.clone();
    skip.0.insert(shard, gone.start.clone());
    Error::OutOfRange { shard, gone, skip: Box::new(skip) }
}
