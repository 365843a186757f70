//! `cairn start`: run one site in the foreground until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_inventory::Role;
use cairn_node::site::{Site, SiteOptions};
use clap::Args;

use crate::addr::parse_addr;

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The site's data dir (created on first start).
    #[arg(long, value_name = "DIR", env = "CAIRN_DATA_DIR")]
    data_dir: PathBuf,
    /// The UDP address to listen on; peers and the CLI reach the site there.
    #[arg(long, value_name = "HOST:PORT", env = "CAIRN_LISTEN", default_value = "127.0.0.1:7001", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Credentials dir (ca.pem, cert.pem, key.pem), or a cluster dir with the CA key
    /// (the site then issues itself a certificate under DATA_DIR/tls).
    #[arg(long, value_name = "DIR", env = "CAIRN_CLUSTER_DIR", default_value = "./cairn-data/cluster")]
    cluster_dir: PathBuf,
    /// core sites hold replicas; replicant sites never do.
    #[arg(long, env = "CAIRN_ROLE", default_value = "core")]
    role: Role,
    /// A site to start gossiping with (repeat, or separate with commas).
    #[arg(long = "seed", value_name = "HOST:PORT", env = "CAIRN_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Failure-domain label (rack, zone) used to spread replicas.
    #[arg(long, env = "CAIRN_ZONE")]
    zone: Option<String>,
    /// Relative capacity for placement (100 = the usual).
    #[arg(long, env = "CAIRN_CAPACITY", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    capacity: u32,
    /// Milliseconds between gossip rounds.
    #[arg(long, env = "CAIRN_GOSSIP_INTERVAL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    gossip_interval_ms: u64,
}

pub(crate) fn run(args: StartArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut options = SiteOptions::new(args.data_dir.clone(), args.listen, args.cluster_dir);
        options.role = args.role;
        options.zone = args.zone;
        options.capacity = args.capacity;
        options.gossip.seeds = args.seeds;
        options.gossip.interval = Duration::from_millis(args.gossip_interval_ms);
        let site = Site::start(options)
            .await
            .with_context(|| format!("starting the site in {}", args.data_dir.display()))?;
        let identity = site.inventory.identity();
        println!(
            "site {} listening on {} (cluster {}, role {})",
            identity.site_id,
            site.endpoint.local_addr(),
            identity.cluster_id,
            args.role
        );
        wait_for_signal().await?;
        eprintln!("stopping (a second signal exits at once)");
        tokio::select! {
            () = site.shutdown() => {}
            _ = wait_for_signal() => {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
        }
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
