//! `cairn start`: run one site in the foreground until SIGINT or SIGTERM.
//!
//! Settings come from flags, then `CAIRN_*` environment variables, then the TOML file of
//! `--config`, then defaults (see [`crate::cli::config`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cairn_inventory::Role;
use cairn_node::site::Site;
use clap::Args;

use crate::UsageError;
use crate::cli::addr::parse_addr;
use crate::cli::config::{
    DataSection, FileConfig, GossipSection, LimitsSection, PlacementSection, TransportSection,
};

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The site's data dir (created on first start).
    #[arg(long, value_name = "DIR", env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The UDP address to listen on; peers and the CLI reach the site there [default: 127.0.0.1:7001].
    #[arg(long, value_name = "HOST:PORT", env = "CAIRN_LISTEN", value_parser = parse_addr)]
    listen: Option<SocketAddr>,
    /// core sites hold replicas; replicant sites never do; must be what the site's
    /// certificate (DATA_DIR/tls, issued by `cairn cluster issue-cert`) names [default: core].
    #[arg(long, env = "CAIRN_ROLE")]
    role: Option<Role>,
    /// For a replicant: a db to keep a read-only copy of, every shard, followed from the
    /// core replicas (repeat, or separate with commas); a db created later is followed
    /// once it exists.
    #[arg(long = "follow", value_name = "DB", env = "CAIRN_FOLLOW", value_delimiter = ',')]
    follow: Vec<String>,
    /// A site to start gossiping with (repeat, or separate with commas).
    #[arg(long = "seed", value_name = "HOST:PORT", env = "CAIRN_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics [default: off].
    #[arg(long, value_name = "HOST:PORT", env = "CAIRN_METRICS_LISTEN", value_parser = parse_addr)]
    metrics_listen: Option<SocketAddr>,
    /// Serve the HTTP/JSON API (HTTPS with the site's certificate; clients present a
    /// certificate of the cluster or a bearer token) at https://HOST:PORT [default: off].
    #[arg(long, value_name = "HOST:PORT", env = "CAIRN_HTTP_LISTEN", value_parser = parse_addr)]
    http_listen: Option<SocketAddr>,
    /// Threads that run the site's async work (QUIC, gossip, requests), 1-1024; LMDB
    /// work runs on a blocking pool beside them [default: half the cores, at least one].
    #[arg(long, value_name = "N", env = "CAIRN_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Failure-domain label (rack, zone) used to spread replicas.
    #[arg(long, env = "CAIRN_ZONE")]
    zone: Option<String>,
    /// Relative capacity for placement, 1-10000 [default: 100].
    #[arg(long, env = "CAIRN_CAPACITY")]
    capacity: Option<u32>,
    /// Milliseconds between gossip rounds, 10-60000 [default: 250].
    #[arg(long, env = "CAIRN_GOSSIP_INTERVAL_MS")]
    gossip_interval_ms: Option<u64>,
    /// Catch-up throughput cap for this site, KiB/s over all its catch-up streams
    /// (0: no cap) [default: 0].
    #[arg(long, value_name = "KIB_PER_S", env = "CAIRN_CATCH_UP_LIMIT")]
    catch_up_limit: Option<u64>,
    /// Seconds a site must be dead before automation recovers its shards on other
    /// sites [default: 600].
    #[arg(long, value_name = "SECS", env = "CAIRN_LOST_AFTER_SECS")]
    lost_after_secs: Option<u64>,
    /// Recover shards of lost sites and trim over-replicated ones automatically
    /// [default: true].
    #[arg(long, value_name = "BOOL", env = "CAIRN_AUTO_REPAIR")]
    auto_repair: Option<bool>,
    /// Rebalance after a site joins, and empty draining sites, automatically
    /// [default: true].
    #[arg(long, value_name = "BOOL", env = "CAIRN_AUTO_REBALANCE")]
    auto_rebalance: Option<bool>,
    /// Congestion controller of every QUIC connection: cubic, or bbr for lossy,
    /// long paths (quinn marks its BBR experimental) [default: cubic].
    #[arg(long, value_name = "CC", env = "CAIRN_CONGESTION")]
    congestion: Option<cairn_transport::Congestion>,
    /// A peer's db settings whose clock reading is further ahead of this site's clock
    /// than this are not believed (listed as `invalid` in the view) [default: 60].
    #[arg(long, value_name = "SECS", env = "CAIRN_MAX_CLOCK_DRIFT_SECS")]
    max_clock_drift_secs: Option<u64>,
    /// A TOML file with settings (flags and environment variables win over it).
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Print the merged settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl StartArgs {
    /// What the flags and environment variables set.
    fn given(&self) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            role: self.role,
            follow: (!self.follow.is_empty()).then(|| self.follow.clone()),
            seeds: (!self.seeds.is_empty()).then(|| self.seeds.clone()),
            zone: self.zone.clone(),
            capacity: self.capacity,
            worker_threads: self.worker_threads,
            metrics_listen: self.metrics_listen,
            http_listen: self.http_listen,
            gossip: GossipSection { interval_ms: self.gossip_interval_ms, ..GossipSection::default() },
            transport: TransportSection { congestion: self.congestion, ..TransportSection::default() },
            data: DataSection { catch_up_limit_kib: self.catch_up_limit, ..DataSection::default() },
            placement: PlacementSection {
                lost_after_secs: self.lost_after_secs,
                auto_repair: self.auto_repair,
                auto_rebalance: self.auto_rebalance,
            },
            limits: LimitsSection {
                max_clock_drift_secs: self.max_clock_drift_secs,
                ..LimitsSection::default()
            },
            ..FileConfig::default()
        }
    }
}

/// Threads of the site's blocking pool (LMDB transactions).
const MAX_BLOCKING_THREADS: usize = 64;

pub(crate) fn run(args: StartArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path).map_err(|e| UsageError::from_err(&e))?,
        None => FileConfig::default(),
    };
    let merged = args.given().over(file).over(FileConfig::defaults());
    if args.print_config {
        print!("{}", toml::to_string_pretty(&merged).context("printing the config")?);
        return Ok(());
    }
    let options = merged.to_options().map_err(|e| UsageError::from_err(&e))?;
    let worker_threads = merged.worker_threads().map_err(|e| UsageError::from_err(&e))?;
    let role = options.role;
    let data_dir = options.data_dir.clone();
    // Inventory calls run on the blocking pool. They are short, so a small pool does the
    // work; and a burst of requests (a flood of pulls or reads) then costs at most this
    // many threads' stacks rather than tokio's default of 512.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let site = Site::start(options)
            .await
            .with_context(|| format!("starting the site in {}", data_dir.display()))?;
        let identity = site.inventory.identity();
        println!(
            "site {} listening on {} (cluster {}, role {role})",
            identity.site_id,
            site.endpoint.local_addr(),
            identity.cluster_id,
        );
        if let Some(http) = site.http_addr {
            // Whoever started us may read only the banner line and close stdout: a
            // failed write here must not stop the site.
            let _ = writeln!(std::io::stdout(), "HTTP API at https://{http}/v1 (health at /healthz)");
        }
        let mut fatal = site.fatal();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let failed = loop {
            tokio::select! {
                signal = wait_for_signal() => { signal?; break None }
                why = fatal.wait_for(Option::is_some) => break why.ok().and_then(|w| w.clone()),
                _ = hangup.recv() => match site.reload_credentials() {
                    Ok(credentials) => eprintln!(
                        "SIGHUP: serving new connections with the certificate of {} (valid until {} s since the epoch)",
                        credentials.identity(),
                        credentials.not_after_unix()
                    ),
                    Err(error) => eprintln!("SIGHUP: certificate not reloaded, the one loaded before stays: {error}"),
                },
            }
        };
        if let Some(why) = failed {
            eprintln!("error: {why}; stopping the site");
            tokio::select! {
                () = site.shutdown() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            }
            std::process::exit(1);
        }
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
