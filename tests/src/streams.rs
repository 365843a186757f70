//! Data-plane helpers: writes with topics and acknowledgement levels, fetches by
//! position, routes, and a `ctl read --follow` process whose output is collected.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_inventory::{
    DbName, Entry, FetchStart, Frontier, Message, ProducerName, Stored, Topic, TopicFilter,
};
use cairn_transport::{Ack, FetchRequest, Request, Response, Routes, WriteRequest};

use crate::Client;

/// A message of `topic` with `payload`.
pub fn message(topic: &str, payload: impl Into<Vec<u8>>) -> Message {
    Message::new(Topic::new(topic).expect("topic"), payload)
}

impl Client {
    /// Writes `messages` to `(db, shard)` at `at`.
    pub async fn write(
        &self,
        at: SocketAddr,
        db: &str,
        shard: u32,
        messages: Vec<Message>,
        producer: Option<(&str, u64)>,
        ack: Ack,
    ) -> Result<Vec<Stored>, String> {
        let request = Request::Write(WriteRequest {
            db: DbName::new(db).expect("name"),
            shard,
            messages,
            producer: producer.map(|(name, first)| (ProducerName::new(name).expect("producer"), first)),
            ack,
            ack_timeout_ms: 5_000,
        });
        match self.request(at, &request).await? {
            Response::Written { ids } => Ok(ids),
            other => Err(format!("write answered {other:?}")),
        }
    }

    /// Opens a subscription at `at`.
    pub async fn subscribe(
        &self,
        at: SocketAddr,
        request: &cairn_transport::SubscribeRequest,
    ) -> Result<cairn_transport::Subscription, String> {
        self.endpoint.subscribe(at, request).await.map_err(|e| e.to_string())
    }

    /// The db's routes, by `at`'s view.
    pub async fn routes(&self, at: SocketAddr, db: &str) -> Result<Routes, String> {
        match self.request(at, &Request::Routes { db: DbName::new(db).expect("name") }).await? {
            Response::Routes(routes) => Ok(routes),
            other => Err(format!("routes answered {other:?}")),
        }
    }

    /// Every entry of `(db, shard)` at `at` matching `filter`, fetched page by page from
    /// the start; and the final position.
    pub async fn fetch_all(
        &self,
        at: SocketAddr,
        db: &str,
        shard: u32,
        filter: &str,
    ) -> Result<(Vec<Entry>, Frontier), String> {
        let mut out = Vec::new();
        let mut start = FetchStart::Earliest;
        loop {
            let request = Request::Fetch(FetchRequest {
                db: DbName::new(db).expect("name"),
                shard,
                start: start.clone(),
                filter: TopicFilter::new(filter).expect("filter"),
                since_ms: None,
                max_entries: 10_000,
                wait_ms: 0,
            });
            match self.request(at, &request).await? {
                Response::Fetched { entries, cursor, more } => {
                    out.extend(entries);
                    start = FetchStart::After(cursor.clone());
                    if !more {
                        return Ok((out, cursor));
                    }
                }
                other => return Err(format!("fetch answered {other:?}")),
            }
        }
    }
}

/// A `cairn ctl read --follow --format json` process; its entry lines are collected.
#[derive(Debug)]
pub struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Follower {
    /// Starts `bin ctl --node node read DB --follow --format json ARGS…`.
    pub fn start(bin: &Path, cluster: &Path, node: SocketAddr, db: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(["ctl", "--credentials"])
            .arg(crate::operator_dir(cluster))
            .args(["--node", &node.to_string(), "--timeout", "4", "read", db, "--follow", "--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the follower");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str(&line) {
                    sink.lock().unwrap_or_else(PoisonError::into_inner).push(value);
                }
            }
        });
        Self { child, lines }
    }

    /// The entry lines so far (cursor lines left out).
    pub fn entries(&self) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().filter(|l| l.get("cursor").is_none()).cloned().collect()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
