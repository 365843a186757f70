//! `cairn ctl --node HOST:PORT …`: operate a running site over QUIC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_transport::{Credentials, Endpoint, Request, Response, TransportConfig};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::addr::parse_addr;
use crate::inventory_cmd::Format;

#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The site to talk to.
    #[arg(long, value_name = "HOST:PORT", env = "CAIRN_NODE", default_value = "127.0.0.1:7001", value_parser = parse_addr)]
    node: SocketAddr,
    /// Where the operator's credentials are (ca.pem, cert.pem, key.pem).
    #[arg(long, value_name = "DIR", env = "CAIRN_CLUSTER_DIR", default_value = "./cairn-data/cluster")]
    cluster_dir: PathBuf,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
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
}

pub(crate) fn run(args: CtlArgs) -> anyhow::Result<()> {
    let credentials = Credentials::load(&args.cluster_dir).with_context(|| {
        format!("loading operator credentials from {} (set --cluster-dir)", args.cluster_dir.display())
    })?;
    let config = TransportConfig {
        connect_timeout: Duration::from_secs(args.timeout.min(30)),
        request_timeout: Duration::from_secs(args.timeout),
        ..TransportConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let endpoint = Endpoint::client(&credentials, config, args.node)?;
        let result = match args.command {
            CtlCommand::Status { format } => status(&endpoint, args.node, format).await,
        };
        endpoint.close().await;
        result
    })
}

async fn status(endpoint: &Endpoint, node: SocketAddr, format: Format) -> anyhow::Result<()> {
    let response = endpoint.request(node, &Request::Status).await?;
    let Response::Status(s) = response else { bail!("{node} answered status with {response:?}") };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "site_id": s.site_id.to_string(), "cluster_id": s.cluster_id.to_string(),
                "version": s.version, "store_format": s.store_format, "uptime_ms": s.uptime_ms,
                "role": s.role.to_string(), "addr": node.to_string(),
            }))?
        ),
        Format::Table => {
            println!("site         {}", s.site_id);
            println!("cluster      {}", s.cluster_id);
            println!("address      {node}");
            println!("role         {}", s.role);
            println!("version      {} (store format {})", s.version, s.store_format);
            println!("uptime       {:.1} s", s.uptime_ms as f64 / 1000.0);
        }
    }
    Ok(())
}
