//! `cairn local`: a whole cluster in one command, stopped cleanly by SIGTERM, and the
//! same sites again on a second run.

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
        .arg("--cluster-dir")
        .arg(root.join("cluster"))
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

fn stop(mut local: Child, base: u16) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(local.id() as libc::pid_t, libc::SIGTERM) };
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
    stop(local, base);

    let local = start_local(root.path(), base);
    assert_eq!(wait_up(base, root.path()), ids, "a second run reuses the same sites");
    stop(local, base);
}
