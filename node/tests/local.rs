//! `cairn local`: a whole cluster in one command, driven with `cairn ctl` (create, wait,
//! publish, read), stopped cleanly by Ctrl-C (SIGINT) or SIGTERM, and the same sites
//! again on a second run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_gossip::{ClusterView, SiteState};

/// A base port with `n` free UDP ports after it.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = 20_000 + (rand_u16() % 30_000);
        let sockets: Vec<_> =
            (0..n).filter_map(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).ok()).collect();
        if sockets.len() == usize::from(n) {
            return base;
        }
    }
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (nanos ^ std::process::id()) as u16
}

fn start_local(root: &Path, base: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["local", "--nodes", "3", "--base-port", &base.to_string(), "--refresh", "1"])
        .arg("--data-root")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn dump(base: u16, root: &Path) -> Option<ClusterView> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dump", "--format", "json", "--timeout", "2", "--node", &format!("127.0.0.1:{base}")])
        .arg("--credentials")
        .arg(root.join("cluster-operator"))
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Waits for three live sites and the demo db with its demo messages (three a shard, on
/// every replica — written once, not again on a second run); answers the site ids.
fn wait_up(base: u16, root: &Path) -> BTreeSet<String> {
    let start = Instant::now();
    loop {
        if let Some(view) = dump(base, root)
            && view.sites.len() == 3
            && view.sites.iter().all(|s| s.state == SiteState::Live)
            && view.dbs.iter().any(|d| {
                d.name.as_str() == "demo"
                    && d.placement
                        .iter()
                        .all(|s| !s.replicas.is_empty() && s.replicas.iter().all(|r| r.entries == 3))
            })
        {
            return view.sites.iter().map(|s| s.site_id.to_string()).collect();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the local cluster did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cairn ctl` against the local cluster's site at `port`: (exit 0?, stdout, stderr).
fn ctl(root: &Path, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["ctl", "--node", &format!("127.0.0.1:{port}"), "--credentials"])
        .arg(root.join("cluster-operator"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Stops `cairn local` with `signal` (SIGINT is Ctrl-C) and checks every site stopped.
fn stop(mut local: Child, base: u16, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(local.id() as libc::pid_t, signal) };
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = local.try_wait().unwrap() {
            break status;
        }
        assert!(asked.elapsed() < Duration::from_secs(20), "cairn local did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "cairn local exited with {status}");
    // Every site stopped: their ports are free again.
    for port in base..base + 3 {
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok(), "port {port} still held by a site");
    }
}

#[test]
fn a_local_cluster_comes_up_stops_and_comes_back_the_same() {
    let root = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let local = start_local(root.path(), base);
    let ids = wait_up(base, root.path());

    // The operator's round trip: create, wait, publish through one site, read at another.
    let (ok, out, err) =
        ctl(root.path(), base, &["db", "create", "events", "--shards", "4", "--replication", "2"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = ctl(root.path(), base + 1, &["wait", "db", "events", "--timeout", "30"]);
    assert!(ok && out.contains("ready: 4/4"), "{out}{err}");
    let (ok, out, err) = ctl(root.path(), base + 2, &["publish", "events", "--shard", "1", "a", "b", "c"]);
    assert!(ok, "{out}{err}");
    // Read through every site (a site without the shard sends the CLI to one with it); a
    // replica may take a moment to receive the write.
    for port in base..base + 3 {
        let asked = Instant::now();
        loop {
            let (ok, out, err) = ctl(root.path(), port, &["read", "events", "--shard", "1"]);
            if ok && out == "a\nb\nc\n" {
                break;
            }
            assert!(asked.elapsed() < Duration::from_secs(10), "read at {port}: {out:?} {err}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop(local, base, libc::SIGINT);

    let local = start_local(root.path(), base);
    assert_eq!(wait_up(base, root.path()), ids, "a second run reuses the same sites");
    stop(local, base, libc::SIGTERM);
}

/// A Ctrl-C that comes while `cairn local` is still starting — its sites listening, the
/// demo db not placed yet — stops it and every site at once (it used to be lost: the
/// command went on and showed the view as if nothing had happened). Also a signal right
/// after the first site listens.
#[test]
fn a_signal_while_starting_stops_every_site() {
    use std::io::{BufRead, BufReader};
    for banners in [3, 1] {
        let root = tempfile::tempdir().unwrap();
        let base = free_ports(3);
        let mut local = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["local", "--nodes", "3", "--base-port", &base.to_string(), "--refresh", "1"])
            .arg("--data-root")
            .arg(root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(local.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < banners {
            let line = lines.next().expect("cairn local ended early").unwrap();
            seen += usize::from(line.starts_with("site "));
        }
        let asked = Instant::now();
        stop(local, base, libc::SIGINT);
        eprintln!("SIGINT after {banners} site banner(s): stopped in {:?}", asked.elapsed());
    }
}
