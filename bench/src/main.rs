//! `cairn-bench`: runs load scenarios against real cairn components and compares each
//! figure with a baseline measured in the same run (see bench/README.md).

mod catchup;
mod counting;
mod failure;
mod gossip;
mod gossip_many;
mod gossip_procs;
mod nats;
mod plans;
mod plot;
mod publish;
mod report;
mod soak;
mod store;
mod streams;
mod transport;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Shard-log append rate vs raw heed puts.
    Store,
    /// Request round trips and bulk stream MB/s vs raw TCP.
    Transport,
    /// Convergence rounds and bytes per site vs plain chitchat over UDP.
    Gossip,
    /// N real `cairn start` processes (20, 50, 100; smoke: 20) vs N plain chitchat/UDP
    /// processes: time to complete views, idle CPU, bytes on the wire, RSS, detection.
    GossipProcs,
    /// N sites in one process over chitchat's channel transport (1,000; smoke: 100):
    /// rounds to complete views, bytes and memory per site vs plain chitchat.
    GossipMany,
    /// Catch-up MB/s of a new replica vs raw TCP copy and raw LMDB writes; publish
    /// throughput and replication lag.
    Catchup,
    /// Time to place a new db and to rebalance onto a new site; bytes moved vs minimum.
    Plans,
    /// Time from SIGKILL to dead in every view, and to replication restored.
    Failure,
    /// The data plane: publish by topic (ack local, quorum) vs raw LMDB appends; reads of
    /// a whole db, one topic and a filter; write and publish-to-subscriber latency.
    Streams,
    /// cairn beside a 3-server NATS JetStream cluster in the same run: acknowledged
    /// publishes/s (ack local and quorum vs R3) and publish-to-consumer latency.
    Nats,
    /// Every scenario above, in order.
    All,
    /// Opt-in, not part of `all`: a mixed load for CAIRN_BENCH_SOAK_SECS (300) with a
    /// site killed and restarted every 20 s; RSS sampled.
    Soak,
}

/// cairn's load harness.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to run.
    scenario: Scenario,
    /// Small sizes, so that every scenario finishes in well under two minutes in total
    /// (what CI runs). Smoke results go to target/bench-smoke unless --results says otherwise.
    #[arg(long)]
    smoke: bool,
    /// Directory for the JSON results (default: bench/results, or target/bench-smoke with --smoke).
    #[arg(long)]
    results: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = args.results.unwrap_or_else(|| {
        if args.smoke { root.join("../target/bench-smoke") } else { root.join("results") }
    });
    let reporter = report::Reporter::new(&dir, args.smoke)?;
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Store {
        store::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Transport {
        transport::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Gossip {
        gossip::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::GossipProcs {
        gossip_procs::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::GossipMany {
        gossip_many::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Catchup {
        catchup::run(&reporter, args.smoke)?;
        publish::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Streams {
        streams::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Nats {
        nats::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Plans {
        plans::run(&reporter, args.smoke)?;
    }
    if all || args.scenario == Scenario::Failure {
        failure::run(&reporter, args.smoke)?;
    }
    if args.scenario == Scenario::Soak {
        soak::run(&reporter)?;
    }
    println!("results appended under {}", dir.display());
    Ok(())
}
