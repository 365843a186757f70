//! `cairn start`: run one site in the foreground until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cairn_inventory::{InventoryConfig, Role};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::TransportConfig;
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
}

pub(crate) fn run(args: StartArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let options = SiteOptions {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            cluster_dir: args.cluster_dir,
            role: args.role,
            inventory: InventoryConfig::default(),
            transport: TransportConfig::default(),
        };
        let site = Site::start(options)
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
        let stopping = site.shutdown();
        tokio::select! {
            () = stopping => {}
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
