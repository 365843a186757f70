//! `cairn ctl plan preview|apply …`: what an operator request would move, and applying
//! it by offering each plan to its site (operator priority: it replaces an automatic
//! plan of the same db). `cairn plan simulate --dump FILE …` runs the same planner
//! offline against a saved view.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, SiteId, Step};
use cairn_transport::{PlanPreview, PlanRequest, Request, Response};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::client::Client;
use crate::cli::dump::node_view;
use crate::cli::inventory::Format;

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCommand {
    /// Show the per-site steps a request would produce, and what would move, without
    /// applying it.
    Preview {
        #[command(subcommand)]
        request: Change,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
    },
    /// Plan a request and deliver its plans to their sites.
    Apply {
        #[command(subcommand)]
        request: Change,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
    },
    /// Cancel a db's running plan on every site that has one (handovers in progress
    /// are undone; replicas already added stay and catch up).
    Cancel {
        /// The db.
        db: DbName,
    },
    /// The plans in flight, as the node's view shows them.
    Show {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Change {
    /// Even out replica counts over the live core sites (±1, or by capacity).
    Rebalance,
    /// Move every replica off a site so it can leave.
    Decommission {
        /// The site: its id, a unique prefix of it (as `dump` shows), or its address.
        site: String,
    },
    /// Bring every shard to its db's replication factor (after `ctl db set
    /// --replication`, when automation's repair is off): add replicas where short,
    /// hand extras over. Replicas on dead sites still count.
    Repair,
    /// Move one replica of a shard from one site to another.
    Move {
        /// The db.
        db: DbName,
        /// The shard.
        shard: u32,
        /// The site holding the replica (id, prefix or address).
        #[arg(long)]
        from: String,
        /// The site to take it (id, prefix or address).
        #[arg(long)]
        to: String,
    },
}

impl Change {
    /// The request, with site names resolved in `view`.
    fn request(self, view: &ClusterView) -> anyhow::Result<PlanRequest> {
        Ok(match self {
            Self::Rebalance => PlanRequest::Rebalance,
            Self::Repair => PlanRequest::Repair,
            Self::Decommission { site } => PlanRequest::Decommission { site: resolve_in(view, &site)? },
            Self::Move { db, shard, from, to } => {
                PlanRequest::Move { db, shard, from: resolve_in(view, &from)?, to: resolve_in(view, &to)? }
            }
        })
    }
}

pub(crate) async fn run(client: &Client, command: PlanCommand) -> anyhow::Result<()> {
    let (change, format, apply) = match command {
        PlanCommand::Preview { request, format } => (request, format, false),
        PlanCommand::Apply { request, format } => (request, format, true),
        PlanCommand::Cancel { db } => return cancel(client, &db).await,
        PlanCommand::Show { format } => return show(client, format).await,
    };
    let request =
        change.request(&node_view(client).await?).with_context(|| format!("in {}'s view", client.node()))?;
    let mut preview = match client.request(&Request::PlanPreview(request.clone())).await? {
        Response::PlanPreview(preview) => preview,
        Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
        other => bail!("{} answered plan preview with {other:?}", client.node()),
    };
    if apply && let PlanRequest::Decommission { site } = request {
        // Draining first: from then on no planner places anything there, and automatic
        // rebalancing finishes the job if these plans are ever replaced.
        drain(client, site).await?;
    }
    if apply {
        // Applied twice, the same change is two plans: the second runs again rather than
        // being answered `AlreadyEnded` by sites that ran the first. (A preview's ids stay
        // those of the view alone, as `plan simulate` computes them.)
        let now = cairn_inventory::now_ms().to_be_bytes();
        cairn_node::planner::made_from(preview.plans.iter_mut().map(|p| &mut p.plan), &now);
    }
    let outcomes = if apply { deliver(client, &preview).await } else { Vec::new() };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&as_json(&preview, apply, &outcomes))?),
        Format::Table => print_table(&preview, apply, &outcomes),
    }
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} plans were not delivered; run the same apply again to retry", outcomes.len());
    }
    Ok(())
}

/// Cancels `db`'s plan on every site the node's view shows running one.
async fn cancel(client: &Client, db: &DbName) -> anyhow::Result<()> {
    let view = node_view(client).await?;
    let running: Vec<_> = view.plans.iter().filter(|p| &p.db == db).collect();
    if running.is_empty() {
        println!("no plan of {db} is running (by {}'s view)", client.node());
        return Ok(());
    }
    let mut failed = 0;
    for plan in running {
        let site = plan.site_id.short();
        let Some(addr) = view.site(plan.site_id).and_then(|s| s.addr.parse::<SocketAddr>().ok()) else {
            println!("{site}: no usable address in the view");
            failed += 1;
            continue;
        };
        match client.request_at(addr, &Request::CancelPlan { db: db.clone() }).await {
            Ok(Response::Cancelled { plan: Some(id) }) => println!("{site}: cancelled plan {}", id.short()),
            Ok(Response::Cancelled { plan: None }) => println!("{site}: no plan pending any more"),
            Ok(other) => {
                println!("{site}: unexpected answer {other:?}");
                failed += 1;
            }
            Err(error) => {
                println!("{site}: {error:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} sites could not be told; run the same cancel again");
    }
    Ok(())
}

/// The plans in flight in the node's view.
async fn show(client: &Client, format: Format) -> anyhow::Result<()> {
    let view = node_view(client).await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&view.plans)?),
        Format::Table => {
            if view.plans.is_empty() {
                println!("no plan in flight");
            }
            for p in &view.plans {
                println!("{}", crate::cli::dump::plan_row(p));
            }
        }
    }
    Ok(())
}

/// A site id from an id, a unique id prefix (4+ hex digits), or an address in `view`.
fn resolve_in(view: &ClusterView, given: &str) -> anyhow::Result<SiteId> {
    if let Ok(id) = given.parse::<SiteId>() {
        return Ok(id);
    }
    let by_addr = given.parse::<SocketAddr>().ok();
    let prefix = given.to_ascii_lowercase();
    let matches: Vec<SiteId> = view
        .sites
        .iter()
        .filter(|s| {
            by_addr.is_some_and(|a| s.addr.parse::<SocketAddr>().ok() == Some(a))
                || (prefix.len() >= 4 && s.site_id.to_string().starts_with(&prefix))
        })
        .map(|s| s.site_id)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no site matches {given:?} (give an id, a prefix of 4+ hex digits, or an address)"),
        _ => bail!("{given:?} matches {} sites; give more of the id", matches.len()),
    }
}

/// `cairn plan simulate`: the planners run offline against a saved view.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// A view saved with `cairn dump --format json`.
    #[arg(long, value_name = "FILE")]
    dump: PathBuf,
    #[command(subcommand)]
    request: Change,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
}

/// Offline planning.
#[derive(Debug, Subcommand)]
pub(crate) enum OfflineCommand {
    /// Run a request's planner against a saved dump and show what it would do (as
    /// `ctl plan preview` does against a live site), so a change can be tried on a copy
    /// of production's view.
    Simulate(SimulateArgs),
}

pub(crate) fn run_offline(command: OfflineCommand) -> anyhow::Result<()> {
    let OfflineCommand::Simulate(args) = command;
    let view = crate::cli::dump::read_view_file(&args.dump, "a `cairn dump --format json` view")?;
    let request = args.request.request(&view)?;
    let preview =
        cairn_node::planner::operator::preview(&view, &request, view.site).map_err(anyhow::Error::msg)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&as_json(&preview, false, &[]))?),
        Format::Table => print_table(&preview, false, &[]),
    }
    Ok(())
}

/// Marks `site` as draining, at its address in the node's view.
async fn drain(client: &Client, site: SiteId) -> anyhow::Result<()> {
    let view = node_view(client).await?;
    let Some(addr) = view.site(site).and_then(|s| s.addr.parse::<SocketAddr>().ok()) else {
        bail!("site {} has no usable address in {}'s view", site.short(), client.node());
    };
    match client.request_at(addr, &client.drain_order(site, true)).await {
        Ok(Response::Draining { on: true }) => Ok(()),
        Ok(other) => bail!("{addr} answered set-draining with {other:?}"),
        Err(error) => Err(error.context(format!(
            "cannot mark {} ({addr}) as draining; a site that is down is replaced by recovery instead",
            site.short()
        ))),
    }
}

/// Offers each plan to its site; the outcome per plan, in order.
async fn deliver(client: &Client, preview: &PlanPreview) -> Vec<(usize, Result<String, String>)> {
    let mut outcomes = Vec::new();
    for (i, site_plan) in preview.plans.iter().enumerate() {
        let outcome = match site_plan.addr.parse::<SocketAddr>() {
            Err(_) => Err(format!("no usable address for site {} in the view", site_plan.site.short())),
            Ok(addr) => match client.request_at(addr, &Request::Schedule(site_plan.plan.clone())).await {
                Ok(Response::Scheduled(outcome)) => Ok(format!("{outcome:?}")),
                Ok(Response::Rejected { reason }) => Err(format!("refused: {reason}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(error) => Err(format!("{error:#}")),
            },
        };
        outcomes.push((i, outcome));
    }
    outcomes
}

fn as_json(
    preview: &PlanPreview,
    apply: bool,
    outcomes: &[(usize, Result<String, String>)],
) -> serde_json::Value {
    let bytes: u64 = preview.moves.iter().map(|m| m.bytes).sum();
    json!({
        "replicas_moving": preview.moves.len(),
        "bytes_moving": bytes,
        "moves": preview.moves,
        "stuck": preview.stuck,
        "plans": preview.plans,
        "applied": apply,
        "delivered": outcomes.iter().map(|(i, o)| json!({
            "site": preview.plans[*i].site,
            "db": preview.plans[*i].plan.db,
            "outcome": match o { Ok(s) => s.clone(), Err(e) => format!("error: {e}") },
        })).collect::<Vec<_>>(),
    })
}

fn print_table(preview: &PlanPreview, apply: bool, outcomes: &[(usize, Result<String, String>)]) {
    let bytes: u64 = preview.moves.iter().map(|m| m.bytes).sum();
    if preview.moves.is_empty() {
        println!("nothing to move");
    } else {
        println!("{} replicas would move, {} bytes to copy", preview.moves.len(), bytes);
    }
    for (site, n) in &preview.stuck {
        println!(
            "stuck: {n} replicas on {} have nowhere to go (every other site holds their shard)",
            site.short()
        );
    }
    for (i, site_plan) in preview.plans.iter().enumerate() {
        let plan = &site_plan.plan;
        println!(
            "\n{} ({}) — db {} plan {}",
            site_plan.site.short(),
            site_plan.addr,
            plan.db,
            plan.plan_id.short()
        );
        for step in &plan.steps {
            println!("  {}", describe(step));
        }
        if let Some((_, outcome)) = outcomes.iter().find(|(j, _)| *j == i) {
            match outcome {
                Ok(o) => println!("  delivered: {o}"),
                Err(e) => println!("  NOT delivered: {e}"),
            }
        }
    }
    if !apply && !preview.plans.is_empty() {
        println!("\n(not applied: `cairn ctl plan apply …` delivers these plans)");
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::AddReplica { shard, upstreams } => {
            let from: Vec<String> = upstreams.iter().map(SiteId::short).collect();
            format!("add_replica      shard {shard:<5} from {}", from.join(", "))
        }
        Step::HandoverReplica { shard, to } => format!("handover_replica shard {shard:<5} to {}", to.short()),
        Step::RemoveReplica { shard } => format!("remove_replica   shard {shard}"),
    }
}
