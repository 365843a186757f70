//! `cairn inventory …`: create, show and check a site's local store without starting it.
//!
//! These open the data dir directly, so they refuse a data dir that a running site holds
//! (its lock file); a running site is watched through the cluster instead.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_inventory::{ClusterId, Inventory, InventoryConfig, ReplicaState};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Table,
    /// For scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InventoryCommand {
    /// Create a site's data dir (a new site id), or open the one there, and print its identity.
    Init {
        /// The site's data dir.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The cluster the site belongs to (32 hex digits); a new random one if omitted.
        #[arg(long, value_name = "HEX")]
        cluster_id: Option<ClusterId>,
    },
    /// Print what a stopped site's inventory holds.
    Show {
        /// The site's data dir.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check every stored record's version and checksum; exit 1 if any is corrupt.
    Verify {
        /// The site's data dir.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

pub(crate) fn run(cmd: InventoryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        InventoryCommand::Init { data_dir, cluster_id } => {
            let cluster = cluster_id.unwrap_or_else(ClusterId::random);
            let inv = Inventory::open(&data_dir, cluster, InventoryConfig::default())
                .with_context(|| format!("opening {}", data_dir.display()))?;
            let id = inv.identity();
            println!("site     {}", id.site_id);
            println!("cluster  {}", id.cluster_id);
            println!("data dir {}", data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        InventoryCommand::Show { data_dir, format } => {
            let inv = open_existing(&data_dir)?;
            show(&inv, format)?;
            Ok(ExitCode::SUCCESS)
        }
        InventoryCommand::Verify { data_dir } => {
            let inv = open_existing(&data_dir)?;
            let report = inv.verify()?;
            for bad in &report.corrupt {
                println!("corrupt {}: {}", bad.record, bad.error);
            }
            println!("{} records checked, {} corrupt", report.checked, report.corrupt.len());
            Ok(if report.corrupt.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn open_existing(dir: &std::path::Path) -> anyhow::Result<Inventory> {
    Inventory::open_existing(dir, InventoryConfig::default())
        .with_context(|| format!("opening {}", dir.display()))
}

fn state_name(state: &ReplicaState) -> String {
    match state {
        ReplicaState::CatchingUp { upstreams } => {
            format!("catching_up from {}", upstreams.iter().map(|s| s.short()).collect::<Vec<_>>().join(","))
        }
        ReplicaState::Ready => "ready".into(),
        ReplicaState::HandingOver { to } => format!("handing_over to {}", to.short()),
        ReplicaState::Following { caught_up: true } => "following".into(),
        ReplicaState::Following { caught_up: false } => "following (catching up)".into(),
    }
}

fn show(inv: &Inventory, format: Format) -> anyhow::Result<()> {
    let id = inv.identity();
    let dbs = inv.dbs()?;
    let replicas = inv.replicas(None)?;
    let plans = inv.pending_plans()?;
    let mut stats = Vec::with_capacity(replicas.len());
    for r in &replicas {
        stats.push(inv.log_stats(&r.db, r.shard)?);
    }
    if format == Format::Json {
        let value = json!({
            "site_id": id.site_id.to_string(),
            "cluster_id": id.cluster_id.to_string(),
            "created_ms": id.created_ms,
            "dbs": dbs.iter().map(|d| json!({
                "name": d.name.as_str(), "shards": d.settings.shards, "replication": d.settings.replication,
                "retention": {
                    "max_age_ms": d.settings.retention.max_age_ms,
                    "max_bytes": d.settings.retention.max_bytes,
                },
                "created_ms": d.created.wall_ms, "origin": d.origin.to_string(),
            })).collect::<Vec<_>>(),
            "replicas": replicas.iter().zip(&stats).map(|(r, s)| json!({
                "db": r.db.as_str(), "shard": r.shard, "state": state_name(&r.state),
                "entries": s.entries, "bytes": s.bytes, "updated_ms": r.updated_ms,
            })).collect::<Vec<_>>(),
            "plans": plans.iter().map(|p| json!({
                "db": p.db.as_str(), "plan_id": p.plan_id.to_string(), "priority": p.priority,
                "step": p.done, "steps": p.total(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("site {}  cluster {}", id.site_id, id.cluster_id);
    println!("\nDBS ({})", dbs.len());
    for d in &dbs {
        println!("  {:<24} shards {:>5}  replication {}", d.name, d.settings.shards, d.settings.replication);
    }
    println!("\nREPLICAS ({})", replicas.len());
    for (r, s) in replicas.iter().zip(&stats) {
        println!(
            "  {:<24} shard {:>5}  {:<32} {:>10} entries {:>12} bytes",
            r.db,
            r.shard,
            state_name(&r.state),
            s.entries,
            s.bytes
        );
    }
    println!("\nPLANS ({})", plans.len());
    for p in &plans {
        println!(
            "  {:<24} plan {}  priority {}  step {}/{}",
            p.db,
            p.plan_id.short(),
            p.priority,
            p.done,
            p.total()
        );
    }
    Ok(())
}
