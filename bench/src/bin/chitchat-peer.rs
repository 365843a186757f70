//! `chitchat-peer`: one node of plain chitchat over UDP, the baseline the bench's
//! `gossip-procs` scenario runs beside real `cairn start` processes.
//!
//! It gossips `--keys` keys of `--value-bytes` bytes each under a random 32-hex-digit
//! node id (like a cairn site id), with cairn's failure-detector settings, and every
//! interval writes one status line to `--status` (replaced atomically):
//! `live=N dead=N bytes_sent=N` — the bench reads it for convergence, detection and
//! the bytes the node sent (chitchat's UDP payloads: all it puts on the wire).

#[path = "../counting.rs"]
mod counting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion};
use clap::Parser;

use counting::Counting;

/// One plain chitchat node over UDP.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (UDP).
    #[arg(long)]
    listen: SocketAddr,
    /// Seeds.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Gossip interval.
    #[arg(long, default_value_t = 250)]
    interval_ms: u64,
    /// Failure detector threshold (cairn's default).
    #[arg(long, default_value_t = 8.0)]
    phi: f64,
    /// Keys this node sets.
    #[arg(long, default_value_t = 2)]
    keys: usize,
    /// Bytes of each key's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// chitchat's digest encoding: 0 (plain) or 1 (compressed).
    #[arg(long, default_value_t = 1)]
    protocol: u8,
    /// The status file.
    #[arg(long)]
    status: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let interval = Duration::from_millis(args.interval_ms);
    let node_id: String =
        (0..32).map(|_| char::from_digit(rand::random_range(0..16), 16).unwrap_or('0')).collect();
    let generation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id, generation, args.listen),
        cluster_id: "bench".into(),
        gossip_interval: interval,
        listen_addr: args.listen,
        seed_nodes: args.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: args.phi,
            sampling_window_size: 100,
            max_interval: Duration::from_secs(10).max(interval * 4),
            initial_interval: interval,
            dead_node_grace_period: Duration::from_secs(3600),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: if args.protocol == 0 { ProtocolVersion::V0 } else { ProtocolVersion::V1 },
    };
    let value = |k: usize| -> String {
        (0..args.value_bytes).map(|i| char::from(b'a' + ((i * 7 + k * 13) % 26) as u8)).collect()
    };
    let initial: Vec<(String, String)> = (0..args.keys).map(|k| (format!("key{k}"), value(k))).collect();
    let bytes = Arc::new(AtomicU64::new(0));
    let transport = Counting { inner: UdpTransport, bytes: bytes.clone() };
    let handle = chitchat::spawn_chitchat(config, initial, &transport).await?;
    let chitchat = handle.chitchat();
    let tmp = args.status.with_extension("tmp");
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let (live, dead) = {
            let chitchat = chitchat.lock().await;
            (chitchat.live_nodes().count(), chitchat.dead_nodes().count())
        };
        let line = format!("live={live} dead={dead} bytes_sent={}\n", bytes.load(Ordering::Relaxed));
        std::fs::write(&tmp, line).context("writing the status file")?;
        std::fs::rename(&tmp, &args.status).context("replacing the status file")?;
    }
}
