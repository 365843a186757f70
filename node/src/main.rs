//! `cairn`: one site of a sharded durable storage cluster, and the tools to run it.

mod cli;

use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};

use cli::{cluster, ctl, dump, import, inventory, local, logging, plan, start};

/// cairn: a peer-to-peer node for a sharded durable storage cluster.
#[derive(Debug, Parser)]
#[command(name = "cairn", version = version(), about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one site in the foreground until SIGINT or SIGTERM.
    Start(start::StartArgs),
    /// Run a whole local cluster (N sites as child processes) and watch its view.
    Local(local::LocalArgs),
    /// Operate a running site.
    Ctl(ctl::CtlArgs),
    /// Print the cluster view as one site holds it.
    Dump(dump::DumpArgs),
    /// Create a cluster's certificate authority and issue certificates.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Look after a site's local inventory (its LMDB store) directly.
    #[command(subcommand)]
    Inventory(inventory::InventoryCommand),
    /// Rebuild a stopped site's inventory from a placement (a dump file or a live site).
    Import(import::ImportArgs),
    /// Try the planners offline against a saved view.
    #[command(subcommand)]
    Plan(plan::OfflineCommand),
}

/// A bad setting or argument found after parsing (exit code 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(String);

impl UsageError {
    /// Wraps any error's full text.
    pub(crate) fn from_err(err: &anyhow::Error) -> anyhow::Error {
        Self(format!("{err:#}")).into()
    }
}

/// `cairn --version` shows the store format too, since that decides which data dirs
/// this build can open.
fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        format!("{} (store format {})", env!("CARGO_PKG_VERSION"), cairn_inventory::STORE_FORMAT)
    });
    &VERSION
}

/// Three glibc malloc settings, each unless its environment variable is set:
///
/// - glibc gives each thread that allocates under contention its own malloc arena (up
///   to eight per core) and keeps freed memory in them. A site's short bursts of buffers
///   (catch-up after a peer restarts) land in ever more arenas, so its resident memory
///   ratchets up long after the buffers are freed (the bench's `soak`, site 0 after
///   300 s: 69 MiB anonymous with the default, 37 MiB with two arenas; heaptrack puts its
///   peak heap at ~23 MiB). Two arenas (`MALLOC_ARENA_MAX`).
/// - Buffers of 128 KiB and more (pull batches, read answers, frames) are mapped for
///   themselves and given back when freed (`MALLOC_MMAP_THRESHOLD_`). glibc otherwise
///   raises this threshold each time such a buffer is freed and serves later ones from
///   the heap, which then keeps a burst's peak for good: 256 stalled pull streams grew a
///   site by 8.4 MiB that stayed, and by 2 MiB with the threshold fixed.
/// - Up to 512 KiB free at the top of a heap is kept rather than given back
///   (`MALLOC_TRIM_THRESHOLD_`; glibc's default is 128 KiB). chitchat compresses every
///   digest with a fresh zstd context of about 160 KiB: with the default, each gossip
///   message grew the heap and gave it back again (at 5 idle sites, 56 `brk`/`madvise`
///   calls a second per site, with their page faults; none with this).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; called before any other
        // thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            }
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 10);
            }
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Start(args) => start::run(args).map(|()| ExitCode::SUCCESS),
        Command::Local(args) => local::run(args).map(|()| ExitCode::SUCCESS),
        Command::Ctl(args) => ctl::run(args).map(|()| ExitCode::SUCCESS),
        Command::Dump(args) => dump::run(args).map(|()| ExitCode::SUCCESS),
        Command::Cluster(cmd) => cluster::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Inventory(cmd) => inventory::run(cmd),
        Command::Plan(cmd) => plan::run_offline(cmd).map(|()| ExitCode::SUCCESS),
        Command::Import(args) => import::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_the_store_format_this_build_reads() {
        assert!(super::version().ends_with(&format!("(store format {})", cairn_inventory::STORE_FORMAT)));
    }
}
