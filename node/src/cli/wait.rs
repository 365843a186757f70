//! `cairn ctl wait db|plan …` and `cairn ctl db list`: watching placement through the
//! node's view. A wait polls the view until its condition holds, showing progress — a
//! bar redrawn in place on a terminal, a plain line per change otherwise — and fails
//! (exit 1) when its timeout passes first.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use cairn_gossip::ClusterView;
use cairn_gossip::view::DbView;
use cairn_inventory::DbName;
use clap::Subcommand;
use serde_json::json;

use crate::cli::client::Client;
use crate::cli::dump::node_view;
use crate::cli::inventory::Format;

#[derive(Debug, Subcommand)]
pub(crate) enum WaitCommand {
    /// Until every shard of the db has its full set of ready replicas on live sites.
    Db {
        /// The db.
        name: DbName,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Until no site has a pending plan for the db.
    Plan {
        /// The db.
        db: DbName,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// Shards with their full set of ready replicas on live sites.
fn shards_ready(view: &ClusterView, db: &DbView) -> u32 {
    let full = |s: &&cairn_gossip::view::ShardView| {
        let ready = s.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count();
        ready as u32 >= db.replication()
    };
    db.placement.iter().filter(full).count() as u32
}

pub(crate) async fn wait(client: &Client, command: WaitCommand) -> anyhow::Result<()> {
    let (what, timeout) = match &command {
        WaitCommand::Db { name, timeout } => (format!("db {name} ready"), *timeout),
        WaitCommand::Plan { db, timeout } => (format!("plans of {db} done"), *timeout),
    };
    let started = Instant::now();
    let mut progress = Progress::new(&what);
    // Plans just delivered may not be gossiped yet: "no plan" must be seen twice in a row.
    let mut seen_done = 0;
    loop {
        // A view we cannot fetch right now (the node restarting) is retried until the timeout.
        if let Ok(view) = node_view(client).await {
            let (done, total) = match &command {
                WaitCommand::Db { name, .. } => match view.db(name) {
                    Some(db) => (u64::from(shards_ready(&view, db)), u64::from(db.shards())),
                    None => (0, 1),
                },
                WaitCommand::Plan { db, .. } => {
                    let plans: Vec<_> = view.plans.iter().filter(|p| &p.db == db).collect();
                    let steps: u64 = plans.iter().map(|p| u64::from(p.steps)).sum();
                    let done: u64 = plans.iter().map(|p| u64::from(p.step)).sum();
                    if plans.is_empty() { (1, 1) } else { (done, steps.max(1)) }
                }
            };
            progress.show(done, total);
            seen_done = if done >= total { seen_done + 1 } else { 0 };
            let needed = if matches!(command, WaitCommand::Plan { .. }) { 2 } else { 1 };
            if seen_done >= needed {
                progress.finish();
                return Ok(());
            }
        }
        if started.elapsed() >= Duration::from_secs(timeout) {
            progress.finish();
            bail!("timed out after {timeout} s waiting for {what} (by {}'s view)", client.node());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Progress output: a bar on a terminal, plain lines otherwise.
struct Progress {
    what: String,
    terminal: bool,
    last: Option<(u64, u64)>,
}

impl Progress {
    fn new(what: &str) -> Self {
        Self { what: what.to_owned(), terminal: std::io::stdout().is_terminal(), last: None }
    }

    fn show(&mut self, done: u64, total: u64) {
        if self.last == Some((done, total)) {
            return;
        }
        self.last = Some((done, total));
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (done.min(total) * WIDTH / total.max(1)) as usize;
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH as usize - filled));
            print!("\r{}: [{bar}] {done}/{total}", self.what);
            let _ = std::io::stdout().flush();
        } else {
            println!("{}: {done}/{total}", self.what);
        }
    }

    fn finish(&self) {
        if self.terminal {
            println!();
        }
    }
}

/// `ctl db list`: every db in the node's view with its placement state.
pub(crate) async fn list(client: &Client, format: Format) -> anyhow::Result<()> {
    let view = node_view(client).await?;
    let rows: Vec<_> = view
        .dbs
        .iter()
        .map(|db| {
            let plans = view.plans.iter().filter(|p| p.db == db.name).count();
            (db, shards_ready(&view, db), plans)
        })
        .collect();
    match format {
        Format::Json => {
            let out: Vec<_> = rows
                .iter()
                .map(|(db, ready, plans)| {
                    json!({
                        "name": db.name, "shards": db.shards(), "replication": db.replication(),
                        "retention": db.settings.retention, "shards_ready": ready, "plans_in_flight": plans,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            if rows.is_empty() {
                println!("no dbs");
                return Ok(());
            }
            println!("{:<24} {:>7} {:>5} {:>13} {:>6}", "db", "shards", "repl", "shards ready", "plans");
            for (db, ready, plans) in rows {
                println!(
                    "{:<24} {:>7} {:>5} {:>13} {:>6}",
                    db.name.as_str(),
                    db.shards(),
                    db.replication(),
                    format!("{ready}/{}", db.shards()),
                    plans
                );
            }
        }
    }
    Ok(())
}
