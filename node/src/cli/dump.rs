//! `cairn dump`: the cluster view as one site holds it.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_gossip::ClusterView;
use cairn_transport::{Request, Response};
use clap::Args;

use crate::cli::client::{Client, ConnArgs, with_client};
use crate::cli::inventory::Format;

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format: a table for people, or the JSON documented in the README.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print again every INTERVAL seconds until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

/// Fetches the view's JSON from a site.
pub(crate) async fn fetch(client: &Client) -> anyhow::Result<String> {
    match client.request(&Request::Dump).await? {
        Response::Dump { json } => Ok(json),
        other => bail!("{} answered dump with {other:?}", client.node()),
    }
}

/// The node's cluster view, parsed and checked whole.
pub(crate) async fn node_view(client: &Client) -> anyhow::Result<ClusterView> {
    let view: ClusterView = serde_json::from_str(&fetch(client).await?).context("the node's view")?;
    view.check().map_err(|why| anyhow::anyhow!("the node's view is not whole: {why}"))?;
    Ok(view)
}

/// A view saved by `cairn dump --format json` (or edited by hand): parsed into types
/// that hold only values in range, then checked whole. A file that is neither is a
/// usage error naming the file and what is wrong (a field, a line and column).
pub(crate) fn read_view_file(file: &std::path::Path, what: &str) -> anyhow::Result<ClusterView> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let bad =
        |why: String| crate::UsageError::from_err(&anyhow::anyhow!("{}: not {what}: {why}", file.display()));
    let view: ClusterView = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    view.check().map_err(bad)?;
    Ok(view)
}

pub(crate) fn run(args: DumpArgs) -> anyhow::Result<()> {
    with_client(&args.conn, async |client| {
        loop {
            let json = fetch(client).await?;
            match args.format {
                Format::Json => println!("{json}"),
                Format::Table => {
                    let view: ClusterView = serde_json::from_str(&json)?;
                    if args.watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", render_table(&view));
                }
            }
            if !args.watch {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(args.interval)).await;
        }
    })
}

/// The view as text for people.
pub(crate) fn render_table(view: &ClusterView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "view of site {}", view.site.short());
    let _ = writeln!(out, "\nSITES ({})", view.sites.len());
    let _ = writeln!(
        out,
        "  {:<10} {:<22} {:<10} {:<6} {:>8} {:>12} zone",
        "site", "addr", "role", "state", "replicas", "bytes"
    );
    for s in &view.sites {
        let _ = writeln!(
            out,
            "  {:<10} {:<22} {:<10} {:<6} {:>8} {:>12} {}{}",
            s.site_id.short(),
            s.addr,
            s.role.to_string(),
            format!("{:?}", s.state).to_lowercase(),
            s.replicas,
            s.bytes,
            s.zone.as_deref().unwrap_or("-"),
            if s.draining { "  (draining)" } else { "" }
        );
    }
    let _ = writeln!(out, "\nDBS ({})", view.dbs.len());
    for db in &view.dbs {
        let placed = db.placement.iter().map(|s| s.replicas.len()).sum::<usize>();
        let ready = db.placement.iter().flat_map(|s| &s.replicas).filter(|r| r.is_ready()).count();
        let _ = writeln!(
            out,
            "  {:<24} {} shards × {}   replicas {placed} ({ready} ready)   origin {}",
            db.name,
            db.shards(),
            db.replication(),
            db.origin.short()
        );
        for line in follower_lines(db) {
            let _ = writeln!(out, "    {line}");
        }
        for shard in &db.placement {
            for r in &shard.replicas {
                let Some(p) = r.progress else { continue };
                let eta = p.eta_s.map_or("?".to_owned(), |s| format!("{s} s"));
                let _ = writeln!(
                    out,
                    "    shard {:<5} site {}  catching up: {} of {} bytes, {:.1} MB/s, ETA {eta}",
                    shard.shard,
                    r.site_id.short(),
                    r.bytes,
                    p.target_bytes,
                    p.rate_bytes_per_s as f64 / 1e6
                );
            }
        }
    }
    let _ = writeln!(out, "\nPLANS ({})", view.plans.len());
    for p in &view.plans {
        let _ = writeln!(out, "  {}", plan_row(p));
    }
    let _ = writeln!(out, "\nWARNINGS ({})", view.warnings.len());
    for w in &view.warnings {
        let message = match w {
            cairn_gossip::view::Warning::UnderReplicated { message, .. }
            | cairn_gossip::view::Warning::LostShards { message, .. }
            | cairn_gossip::view::Warning::ConflictingDb { message, .. }
            | cairn_gossip::view::Warning::DeadSiteHoldsReplicas { message, .. }
            | cairn_gossip::view::Warning::Invalid { message, .. }
            | cairn_gossip::view::Warning::Forged { message, .. }
            | cairn_gossip::view::Warning::CertificateExpiring { message, .. } => message,
        };
        let _ = writeln!(out, "  {message}");
    }
    out
}

/// Per replicant following `db`: its copies, how many have caught up, and the entries
/// they lack (summed over shards; `?` where no live ready replica tells).
fn follower_lines(db: &cairn_gossip::view::DbView) -> Vec<String> {
    let mut by_site: std::collections::BTreeMap<_, (usize, usize, u64, bool)> = Default::default();
    for f in db.placement.iter().flat_map(|s| &s.followers) {
        let row = by_site.entry(f.site_id).or_default();
        row.0 += 1;
        row.1 += usize::from(f.caught_up);
        row.2 = row.2.saturating_add(f.lag_entries.unwrap_or(0));
        row.3 |= f.lag_entries.is_none();
    }
    by_site
        .into_iter()
        .map(|(site, (copies, caught_up, lag, unknown))| {
            format!(
                "replicant {}: following {copies} of {} shards ({caught_up} caught up), lag {lag}{} entries",
                site.short(),
                db.shards(),
                if unknown { "+?" } else { "" }
            )
        })
        .collect()
}

/// One plan in flight as a table row (dump, `ctl plan show`).
pub(crate) fn plan_row(p: &cairn_gossip::view::PlanView) -> String {
    format!(
        "{:<24} site {}  plan {}  priority {}  step {}/{}  {}",
        p.db.as_str(),
        p.site_id.short(),
        p.plan_id.short(),
        p.priority,
        p.step,
        p.steps,
        p.status
    )
}
