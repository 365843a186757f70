//! `gossip-procs`: N real `cairn start` processes against N real processes of plain
//! chitchat over UDP (`chitchat-peer`), one side after the other in the same run, with
//! the same interval, detector settings, seeds, and number of keys and value bytes per
//! node.
//!
//! For each N: start every process (seeds: the first three), time until every view
//! holds N live sites; let the cluster idle, then over a window read each process's CPU
//! (`/proc/PID/stat`), RSS and anonymous memory (`/proc/PID/status`) and bytes sent;
//! SIGKILL the last one and time until every other process counts it out. cairn's bytes are every UDP datagram
//! its QUIC endpoint sent (`cairn_udp_total`: headers, encryption, acknowledgements,
//! signatures); plain chitchat's are its UDP payloads, all it sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_tests::{SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir};
use serde_json::json;

use crate::plot::Series;
use crate::report::{Measurement, Reporter};

const INTERVAL_MS: u64 = 250;
/// How often the bench looks at the processes while it waits for them.
const POLL: Duration = Duration::from_millis(500);

/// What one side measured at one N.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Seconds from the last process started to every view complete.
    complete_s: f64,
    /// Idle CPU per process, percent of one core.
    cpu_percent: f64,
    /// Bytes sent per process per second, idle.
    bytes_per_s: f64,
    /// Of which chitchat's own messages (the rest is how they are carried).
    payload_per_s: f64,
    /// RSS per process, MiB.
    rss_mib: f64,
    /// Of which anonymous memory (`RssAnon`), MiB: the process's own. The rest is
    /// mostly the pages of its executable, which every process of that binary shares.
    anon_mib: f64,
    /// Seconds from SIGKILL to dead in every other process's view.
    dead_s: f64,
}

/// What one process says about its view and traffic.
#[derive(Debug, Clone, Copy)]
struct Probe {
    live: usize,
    bytes_sent: u64,
    /// chitchat's messages, as chitchat encoded them.
    payload_sent: u64,
}

/// N processes of one side.
enum Side {
    Cairn { sites: Vec<SiteProc>, metrics: Vec<SocketAddr> },
    Plain { children: Vec<Child>, status: Vec<PathBuf> },
}

impl Side {
    fn len(&self) -> usize {
        match self {
            Self::Cairn { sites, .. } => sites.len(),
            Self::Plain { children, .. } => children.len(),
        }
    }

    fn pid(&self, i: usize) -> Option<u32> {
        match self {
            Self::Cairn { sites, .. } => sites[i].pid(),
            Self::Plain { children, .. } => Some(children[i].id()),
        }
    }

    fn probe(&self, i: usize) -> Option<Probe> {
        match self {
            Self::Cairn { metrics, .. } => {
                let text = scrape(metrics[i]).ok()?;
                Some(Probe {
                    live: metric(&text, "cairn_sites{state=\"live\"}")? as usize,
                    bytes_sent: metric(&text, "cairn_udp_total{direction=\"sent\",what=\"bytes\"}")?,
                    payload_sent: metric(&text, "cairn_gossip_total{direction=\"sent\",what=\"bytes\"}")?,
                })
            }
            Self::Plain { status, .. } => {
                let line = std::fs::read_to_string(&status[i]).ok()?;
                let field = |name: &str| -> Option<u64> {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                };
                let sent = field("bytes_sent")?;
                Some(Probe { live: field("live")? as usize, bytes_sent: sent, payload_sent: sent })
            }
        }
    }

    fn kill(&mut self, i: usize) {
        match self {
            Self::Cairn { sites, .. } => sites[i].kill(),
            Self::Plain { children, .. } => {
                let _ = children[i].kill();
                let _ = children[i].wait();
            }
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Self::Plain { children, .. } = self {
            for child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `GET /metrics` from a site's metrics listener.
fn scrape(at: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of the metric line that starts with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Clock ticks per second, for `/proc/PID/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is the first field, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (user, system): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((user + system) / ticks)
}

/// A memory line of a process's `/proc/PID/status` (`VmRSS`, `RssAnon`, …), MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Resident memory of a process (`VmRSS`), MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS")
}

/// Polls until every process in `among` answers `done`, or fails after `limit`;
/// answers when the last one did.
fn wait_all(
    side: &Side,
    among: &[usize],
    what: &str,
    limit: Duration,
    done: impl Fn(Probe) -> bool,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    let mut pending: Vec<usize> = among.to_vec();
    loop {
        pending.retain(|&i| !side.probe(i).is_some_and(&done));
        if pending.is_empty() {
            return Ok(Instant::now());
        }
        if start.elapsed() > limit {
            bail!("{what}: {} of {} processes not there within {limit:?}", pending.len(), among.len());
        }
        std::thread::sleep(POLL);
    }
}

/// Sizes and windows of a run.
struct Plan {
    sizes: Vec<usize>,
    settle: Duration,
    window: Duration,
    limit: Duration,
}

/// Starts, measures and stops one side at one size.
fn measure(mut side: Side, started: Instant, plan: &Plan) -> anyhow::Result<Figures> {
    let n = side.len();
    let everyone: Vec<usize> = (0..n).collect();
    let complete = wait_all(&side, &everyone, "every view complete", plan.limit, |p| p.live == n)?;
    let complete_s = complete.duration_since(started).as_secs_f64();
    std::thread::sleep(plan.settle);
    let ticks = clock_ticks();
    let read = |side: &Side| -> anyhow::Result<Vec<(f64, Probe)>> {
        everyone
            .iter()
            .map(|&i| {
                let pid = side.pid(i).context("a process exited")?;
                let cpu = cpu_seconds(pid, ticks).context("reading /proc/PID/stat")?;
                Ok((cpu, side.probe(i).context("a process did not answer")?))
            })
            .collect()
    };
    let (before, from) = (read(&side)?, Instant::now());
    std::thread::sleep(plan.window);
    let (after, secs) = (read(&side)?, from.elapsed().as_secs_f64());
    let per_site = |f: &dyn Fn(usize) -> f64| everyone.iter().map(|&i| f(i)).sum::<f64>() / n as f64;
    let cpu_percent = per_site(&|i| (after[i].0 - before[i].0) / secs * 100.0);
    let bytes_per_s =
        per_site(&|i| after[i].1.bytes_sent.saturating_sub(before[i].1.bytes_sent) as f64 / secs);
    let payload_per_s =
        per_site(&|i| after[i].1.payload_sent.saturating_sub(before[i].1.payload_sent) as f64 / secs);
    let memory = |field: &str| -> anyhow::Result<f64> {
        let mib = everyone
            .iter()
            .map(|&i| {
                side.pid(i).and_then(|pid| status_mib(pid, field)).with_context(|| format!("reading {field}"))
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        Ok(mib.iter().sum::<f64>() / n as f64)
    };
    let (rss_mib, anon_mib) = (memory("VmRSS")?, memory("RssAnon")?);
    side.kill(n - 1);
    let killed = Instant::now();
    let others: Vec<usize> = (0..n - 1).collect();
    let dead =
        wait_all(&side, &others, "the killed process dead everywhere", plan.limit, |p| p.live == n - 1)?;
    let dead_s = dead.duration_since(killed).as_secs_f64();
    Ok(Figures { complete_s, cpu_percent, bytes_per_s, payload_per_s, rss_mib, anon_mib, dead_s })
}

/// N cairn sites, seeded by the first three; answers them with the time the last started.
fn start_cairn(bin: &Path, root: &Path, n: usize) -> anyhow::Result<(Side, Instant)> {
    let cluster = new_cluster_dir(root);
    let addrs = loopback_addrs(n);
    let metrics: Vec<SocketAddr> = (0..n).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let seeds = &addrs[..3.min(n)];
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        let mut spec = SiteSpec::new(bin, root, &format!("s{i}"), &cluster, addrs[i], seeds);
        spec.extra = vec![
            "--gossip-interval-ms".into(),
            INTERVAL_MS.to_string(),
            "--metrics-listen".into(),
            metrics[i].to_string(),
        ];
        sites.push(SiteProc::start(&spec));
    }
    Ok((Side::Cairn { sites, metrics }, Instant::now()))
}

/// N plain chitchat peers with `keys` keys of `value_bytes` bytes each.
fn start_plain(root: &Path, n: usize, keys: u64, value_bytes: u64) -> anyhow::Result<(Side, Instant)> {
    let peer = std::env::current_exe()?.with_file_name("chitchat-peer");
    if !peer.exists() {
        bail!("{} not found: build the bench with `cargo build -p cairn-bench`", peer.display());
    }
    let addrs = loopback_addrs(n);
    let seeds = &addrs[..3.min(n)];
    let mut children = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    for (i, addr) in addrs.iter().enumerate() {
        let file = root.join(format!("peer{i}.status"));
        let mut command = Command::new(&peer);
        command.args(["--listen", &addr.to_string(), "--interval-ms", &INTERVAL_MS.to_string()]);
        command.args(["--keys", &keys.to_string(), "--value-bytes", &value_bytes.to_string()]);
        command.arg("--status").arg(&file);
        for seed in seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        children.push(
            command.stdin(Stdio::null()).stdout(Stdio::null()).spawn().context("starting chitchat-peer")?,
        );
        status.push(file);
    }
    Ok((Side::Plain { children, status }, Instant::now()))
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let bin = crate::failure::cairn_binary()?;
    let plan = if smoke {
        Plan {
            sizes: vec![20],
            settle: Duration::from_secs(2),
            window: Duration::from_secs(4),
            limit: Duration::from_secs(60),
        }
    } else {
        Plan {
            sizes: vec![20, 50, 100],
            settle: Duration::from_secs(5),
            window: Duration::from_secs(15),
            limit: Duration::from_secs(180),
        }
    };
    let mut plan = plan;
    if let Ok(sizes) = std::env::var("CAIRN_BENCH_GOSSIP_SITES") {
        plan.sizes = sizes
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|n| (4..=1000).contains(n)))
            .collect::<Option<_>>()
            .context("CAIRN_BENCH_GOSSIP_SITES: sizes between 4 and 1000, separated by commas")?;
    }
    if let Ok(secs) = std::env::var("CAIRN_BENCH_GOSSIP_WINDOW_S") {
        let secs: u64 = secs
            .parse()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .context("CAIRN_BENCH_GOSSIP_WINDOW_S: 1 to 3600")?;
        plan.window = Duration::from_secs(secs);
    }
    let mut results = Vec::new();
    for &n in &plan.sizes {
        let root = tempfile::tempdir()?;
        let (side, started) = start_cairn(&bin, root.path(), n)?;
        // What each site gossips about itself, for the plain peers to carry as much.
        wait_all(&side, &[0], "site 0 up", plan.limit, |_| true)?;
        let Side::Cairn { metrics, .. } = &side else { unreachable!("started cairn") };
        let text = scrape(metrics[0])?;
        let keys = metric(&text, "cairn_gossip_published{what=\"keys\"}").context("published keys")?.max(1);
        let bytes = metric(&text, "cairn_gossip_published{what=\"bytes\"}").context("published bytes")?;
        let ours = measure(side, started, &plan).with_context(|| format!("cairn at N = {n}"))?;
        drop(root);
        let root = tempfile::tempdir()?;
        let (side, started) = start_plain(root.path(), n, keys, bytes / keys)?;
        let plain = measure(side, started, &plan).with_context(|| format!("plain chitchat at N = {n}"))?;
        println!("gossip-procs N={n}: cairn {ours:?}; plain chitchat {plain:?} ({keys} keys, {bytes} bytes)");
        results.push((n, keys, bytes, ours, plain));
    }
    for &(n, keys, bytes, ours, plain) in &results {
        let params = json!({
            "ours_gossip_payload_per_s": ours.payload_per_s,
            "sites": n, "interval_ms": INTERVAL_MS, "phi": 8.0, "keys_per_site": keys,
            "bytes_per_site": bytes, "window_s": plan.window.as_secs_f64(), "seeds": 3,
        });
        let record = |name: &str, unit: &'static str, ours: f64, plain: f64, aim: Option<f64>| {
            reporter.record(&Measurement {
                scenario: "gossip-procs",
                name: format!("N={n} {name}"),
                unit,
                ours,
                baseline_name: "plain chitchat/UDP processes".into(),
                baseline: plain,
                // Less is better for every figure here: ratio = plain / ours.
                ratio: plain / ours,
                aim,
                params: params.clone(),
                runs: json!({ "ours": [ours], "baseline": [plain] }),
            })
        };
        record("view complete after last start", "s", ours.complete_s, plain.complete_s, None)?;
        record("idle CPU per site", "% core", ours.cpu_percent, plain.cpu_percent, None)?;
        record("bytes on the wire per site", "B/s", ours.bytes_per_s, plain.bytes_per_s, Some(1.0))?;
        record("RSS per site", "MiB", ours.rss_mib, plain.rss_mib, None)?;
        record("anonymous memory per site (RssAnon)", "MiB", ours.anon_mib, plain.anon_mib, None)?;
        record("SIGKILL to dead everywhere", "s", ours.dead_s, plain.dead_s, None)?;
    }
    plots(reporter.dir(), &results)
}

type Row = (usize, u64, u64, Figures, Figures);

fn plots(dir: &Path, results: &[Row]) -> anyhow::Result<()> {
    /// File suffix, title, unit, and the figure.
    type Plotted = (&'static str, &'static str, &'static str, fn(&Figures) -> f64);
    let figures: [Plotted; 6] = [
        ("complete", "every view complete after the last start", "s", |f| f.complete_s),
        ("cpu", "idle CPU per site", "% of a core", |f| f.cpu_percent),
        ("bytes", "bytes on the wire per site per second", "B/s", |f| f.bytes_per_s),
        ("rss", "RSS per site", "MiB", |f| f.rss_mib),
        ("anon", "anonymous memory (RssAnon) per site", "MiB", |f| f.anon_mib),
        ("dead", "SIGKILL to dead in every view", "s", |f| f.dead_s),
    ];
    for (file, title, unit, pick) in figures {
        let line = |side: fn(&Row) -> &Figures| results.iter().map(|r| (r.0 as f64, pick(side(r)))).collect();
        let series = [
            Series { label: "cairn start processes", points: line(|r| &r.3) },
            Series { label: "plain chitchat/UDP processes", points: line(|r| &r.4) },
        ];
        let path = dir.join(format!("gossip-procs-{file}.svg"));
        crate::plot::scaling(&path, &format!("Gossip processes: {title}"), "sites (N)", unit, &series)?;
    }
    Ok(())
}
