//! `cairn ctl --node HOST:PORT …`: operate a running site over QUIC.

use anyhow::bail;
use cairn_inventory::{DbName, DbSettings, Replication, Retention, ShardCount};
use cairn_transport::operator::DbChange;
use cairn_transport::{Request, Response};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::client::{Client, ConnArgs, with_client};
use crate::cli::data::{PublishArgs, ReadArgs};
use crate::cli::inventory::Format;
use crate::cli::plan::PlanCommand;

#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
    /// The site's id, cluster, version, role and uptime.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Dbs.
    #[command(subcommand)]
    Db(DbCommand),
    /// Write messages by topic (from the arguments, or stdin one a line); the db's
    /// routing picks the shard from the key or topic, unless --shard is given.
    Publish(PublishArgs),
    /// Read messages by topic filter across a db's shards (or one), from a cursor valid
    /// on every replica; --follow keeps streaming.
    Read(ReadArgs),
    /// Preview or apply a change of placement (rebalance, decommission).
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Wait until a db is fully placed or its plans are done (exit 1 on timeout).
    #[command(subcommand)]
    Wait(crate::cli::wait::WaitCommand),
    /// Mark the site as draining (planners move its replicas away and place nothing
    /// new there), or with --off, take it back into placement.
    Drain {
        /// Stop draining.
        #[arg(long)]
        off: bool,
    },
    /// Make the site load its certificate and key again from its data dir (after
    /// `cairn cluster issue-cert` renewed them), as SIGHUP does: new connections use them.
    Reload,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Create a db; the cluster learns of it through gossip.
    Create {
        /// The db's name (1-64 of A-Z a-z 0-9 _ - . starting with a letter or digit).
        name: DbName,
        /// Number of shards (1-65536).
        #[arg(long, default_value = "16")]
        shards: ShardCount,
        /// Ready replicas per shard (1-16).
        #[arg(long, default_value = "2")]
        replication: Replication,
        /// Keep entries at most this many seconds (default: for ever).
        #[arg(long, value_name = "SECONDS")]
        retention_secs: Option<u64>,
        /// Keep at most this many payload bytes per shard (default: no limit).
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
    },
    /// Change a db's replication factor or retention (shard counts never change).
    /// Automation then adds or trims replicas to the new factor (with --auto-repair
    /// false: `ctl plan apply repair`).
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true)
        .args(["replication", "retention_secs", "retention_bytes"])))]
    Set {
        /// The db.
        name: DbName,
        /// Ready replicas per shard (1-16).
        #[arg(long)]
        replication: Option<Replication>,
        /// Keep entries at most this many seconds (0: for ever).
        #[arg(long, value_name = "SECONDS")]
        retention_secs: Option<u64>,
        /// Keep at most this many payload bytes per shard (0: no limit).
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
    },
    /// Drop a db: every site deletes its replicas of it and their data. The name can be
    /// used again for a new db.
    Drop {
        /// The db.
        name: DbName,
        /// Confirm: the db's data on every site is deleted.
        #[arg(long, required = true)]
        yes: bool,
    },
    /// Every db in the node's view: settings, shards with all replicas ready, plans.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub(crate) fn run(args: CtlArgs) -> anyhow::Result<()> {
    with_client(&args.conn, async |client| match args.command {
        CtlCommand::Status { format } => status(client, format).await,
        CtlCommand::Publish(publish) => bounded(client, crate::cli::data::publish(client, publish)).await,
        CtlCommand::Read(read) if read.follows() => crate::cli::data::read(client, read).await,
        CtlCommand::Read(read) => bounded(client, crate::cli::data::read(client, read)).await,
        CtlCommand::Plan(plan) => crate::cli::plan::run(client, plan).await,
        CtlCommand::Wait(wait) => crate::cli::wait::wait(client, wait).await,
        CtlCommand::Db(DbCommand::List { format }) => crate::cli::wait::list(client, format).await,
        CtlCommand::Reload => match client.request(&Request::ReloadCredentials).await? {
            Response::Reloaded { identity, expires_ms } => {
                println!("{} serves as {identity}, valid {}", client.node(), valid_for(expires_ms));
                Ok(())
            }
            Response::Rejected { reason } => bail!("{}: {reason}", client.node()),
            other => bail!("{} answered reload with {other:?}", client.node()),
        },
        CtlCommand::Drain { off } => match client.request(&drain(client, !off).await?).await? {
            Response::Draining { on } => {
                println!("{} is {}", client.node(), if on { "draining" } else { "not draining" });
                Ok(())
            }
            other => bail!("{} answered drain with {other:?}", client.node()),
        },
        CtlCommand::Db(DbCommand::Set { name, replication, retention_secs, retention_bytes }) => {
            set_db(client, name, replication, retention_secs, retention_bytes).await
        }
        CtlCommand::Db(DbCommand::Drop { name, yes: _ }) => {
            match client.change_db(&DbChange::Drop { db: name.clone() }).await? {
                Response::DbChanged { changed: true, .. } => {
                    println!("dropped db {name}; every site deletes its replicas of it");
                }
                Response::DbChanged { changed: false, .. } => println!("db {name} is already dropped"),
                Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
                other => bail!("{} answered db drop with {other:?}", client.node()),
            }
            Ok(())
        }
        CtlCommand::Db(DbCommand::Create { name, shards, replication, retention_secs, retention_bytes }) => {
            // 0 is no limit, as for `db set`.
            let limit = |v: u64| (v > 0).then_some(v);
            let retention = Retention {
                max_age_ms: retention_secs.and_then(|s| limit(s.saturating_mul(1000))),
                max_bytes: retention_bytes.and_then(limit),
            };
            let settings = DbSettings { shards, replication, retention, routing: Default::default() };
            match client.change_db(&DbChange::Create { name: name.clone(), settings }).await? {
                Response::DbCreated { created: true } => {
                    println!("created db {name} ({shards} shards × {replication})")
                }
                Response::DbCreated { created: false } => {
                    println!("db {name} already exists with these settings")
                }
                Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
                other => bail!("{} answered db create with {other:?}", client.node()),
            }
            Ok(())
        }
    })
}

/// `work`, within `--timeout` as a whole (however many sites it tries).
async fn bounded(client: &Client, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    match tokio::time::timeout(client.timeout(), work).await {
        Ok(result) => result,
        Err(_) => bail!("not done within --timeout {} s", client.timeout().as_secs()),
    }
}

/// The sealed order that the node drain (or stop): the node's site id from its status.
async fn drain(client: &Client, on: bool) -> anyhow::Result<Request> {
    match client.request(&Request::Status).await? {
        Response::Status(status) => Ok(client.drain_order(status.site_id, on)),
        other => bail!("{} answered status with {other:?}", client.node()),
    }
}

async fn set_db(
    client: &Client,
    name: DbName,
    replication: Option<Replication>,
    retention_secs: Option<u64>,
    retention_bytes: Option<u64>,
) -> anyhow::Result<()> {
    let retention = if retention_secs.is_some() || retention_bytes.is_some() {
        // The request carries the whole retention: keep the part not given as it is.
        let view = crate::cli::dump::node_view(client).await?;
        let Some(db) = view.db(&name) else { bail!("unknown db {name}: it is not in the cluster view") };
        let limit = |v: u64| (v > 0).then_some(v);
        Some(Retention {
            max_age_ms: retention_secs
                .map_or(db.settings.retention.max_age_ms, |s| limit(s.saturating_mul(1000))),
            max_bytes: retention_bytes.map_or(db.settings.retention.max_bytes, limit),
        })
    } else {
        None
    };
    match client.change_db(&DbChange::Alter { db: name.clone(), replication, retention }).await? {
        Response::DbChanged { changed: true, replication, .. } => {
            println!(
                "db {name} changed (replication {replication}); automation adds or trims replicas to match"
            )
        }
        Response::DbChanged { changed: false, .. } => println!("db {name} already has these settings"),
        Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
        other => bail!("{} answered db set with {other:?}", client.node()),
    }
    Ok(())
}

/// `for N more days` (or hours), or `no longer (expired …)`, of a certificate valid until
/// `expires_ms`.
fn valid_for(expires_ms: u64) -> String {
    let left = i128::from(expires_ms) - i128::from(cairn_inventory::now_ms());
    match left {
        ..=0 => format!("no longer: it expired {} h ago", -left / 3_600_000),
        1..86_400_000 => format!("for {} more hours", left / 3_600_000),
        _ => format!("for {} more days", left / 86_400_000),
    }
}

async fn status(client: &Client, format: Format) -> anyhow::Result<()> {
    let node = client.node();
    let response = client.request(&Request::Status).await?;
    let Response::Status(s) = response else { bail!("{node} answered status with {response:?}") };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "site_id": s.site_id.to_string(), "cluster_id": s.cluster_id.to_string(),
                "version": s.version, "store_format": s.store_format, "uptime_ms": s.uptime_ms,
                "role": s.role.to_string(), "addr": node.to_string(), "data": s.data,
                "retention": s.retention, "certificate_expires_ms": s.certificate_expires_ms,
            }))?
        ),
        Format::Table => {
            println!("site         {}", s.site_id);
            println!("cluster      {}", s.cluster_id);
            println!("address      {node}");
            println!("role         {}", s.role);
            println!("version      {} (store format {})", s.version, s.store_format);
            println!("uptime       {:.1} s", s.uptime_ms as f64 / 1000.0);
            println!("certificate  valid {}", valid_for(s.certificate_expires_ms));
            let d = s.data;
            println!(
                "pulled       {} entries ({} bytes, {} duplicate) in {} batches, {} refused; {} streams",
                d.entries, d.bytes, d.duplicates, d.batches, d.refused_batches, d.streams_opened
            );
            println!(
                "retention    removed {} entries ({} bytes) from this site's replicas",
                s.retention.entries, s.retention.bytes
            );
        }
    }
    Ok(())
}
