//! `cairn start` as a real process: certificates, `ctl status`, clean stop on SIGTERM,
//! restart on the same data dir, and a third-party QUIC client without the cluster
//! certificate.

use cairn_tests::free_port;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A started site and the first line it printed.
struct Running {
    child: Child,
    banner: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, cluster: &Path, port: u16) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["start", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .arg("--cluster-dir")
        .arg(cluster)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("site "), "unexpected banner {banner:?}");
    Running { child, banner }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_site_starts_answers_stops_cleanly_and_keeps_its_id() {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    let out = cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let cluster_id = text(&out).lines().next().unwrap().split_whitespace().nth(1).unwrap().to_owned();
    // A second init on the same dir is refused: a CA is never overwritten.
    let again = cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already holds a cluster CA"));

    let data = root.path().join("site1");
    let port = free_port();
    let mut site = start(&data, &cluster, port);
    let site_id = site.banner.split_whitespace().nth(1).unwrap().to_owned();
    let node = format!("127.0.0.1:{port}");
    let status = cairn(&[
        "ctl",
        "--node",
        &node,
        "--cluster-dir",
        cluster.to_str().unwrap(),
        "status",
        "--format",
        "json",
    ]);
    assert!(status.status.success(), "{}", text(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["site_id"], site_id);
    assert_eq!(json["cluster_id"], cluster_id);
    assert_eq!(json["role"], "core");

    // SIGTERM: exit 0 within a few seconds.
    let asked = Instant::now();
    sigterm(&site.child);
    let code = loop {
        if let Some(status) = site.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "site did not stop within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));

    // Restarted on the same data dir, it is the same site.
    let site = start(&data, &cluster, port);
    assert_eq!(site.banner.split_whitespace().nth(1).unwrap(), site_id);

    // An operator with credentials of another cluster is refused, with the reason.
    let other = root.path().join("other");
    assert!(cairn(&["cluster", "init", "--out", other.to_str().unwrap()]).status.success());
    let refused = cairn(&[
        "ctl",
        "--node",
        &node,
        "--cluster-dir",
        other.to_str().unwrap(),
        "--timeout",
        "3",
        "status",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("cannot reach"), "{}", text(&refused));
    assert!(text(&refused).contains("not of the same cluster"), "{}", text(&refused));

    // Issued credentials work for a second operator.
    let issued = root.path().join("alice");
    let out = cairn(&[
        "cluster",
        "issue-cert",
        "--cluster-dir",
        cluster.to_str().unwrap(),
        "--name",
        "alice",
        "--out",
        issued.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let ok = cairn(&["ctl", "--node", &node, "--cluster-dir", issued.to_str().unwrap(), "status"]);
    assert!(ok.status.success(), "{}", text(&ok));
    drop(site);
}

#[test]
fn a_third_party_quic_client_needs_the_cluster_certificate() {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quic_probe.py");
    let python_ok =
        Command::new("python3").args(["-c", "import aioquic"]).status().is_ok_and(|s| s.success());
    assert!(python_ok, "python3 with aioquic is needed (pip install aioquic; .ci/run does)");

    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    assert!(cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]).status.success());
    let port = free_port();
    let _site = start(&root.path().join("site"), &cluster, port);
    let run = |extra: &[&Path]| {
        let out = Command::new("python3")
            .arg(&probe)
            .args(["127.0.0.1", &port.to_string()])
            .args(extra)
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    // Without a certificate: no answer.
    let (answered, said) = run(&[]);
    assert!(!answered, "aioquic without a certificate got an answer: {said}");
    // With a certificate of another cluster: no answer.
    let other = root.path().join("other");
    assert!(cairn(&["cluster", "init", "--out", other.to_str().unwrap()]).status.success());
    let (answered, said) = run(&[&other.join("cert.pem"), &other.join("key.pem")]);
    assert!(!answered, "aioquic with a foreign certificate got an answer: {said}");
    // The control: with the cluster's operator certificate the same client is answered.
    let (answered, said) = run(&[&cluster.join("cert.pem"), &cluster.join("key.pem")]);
    assert!(answered, "aioquic with the cluster certificate got no answer: {said}");
}

/// A site killed and restarted on the same address is reached at once by a client that
/// still holds a connection to its previous incarnation: the new process answers that
/// connection's packets with a stateless reset signed by the same key (derived from the
/// site's private key), so the client redials instead of waiting out a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_site_resets_old_connections_at_once() {
    use cairn_tests::{Client, SiteProc, SiteSpec, new_cluster_dir};
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let mut site = SiteProc::start(&SiteSpec::new(bin, root.path(), "s", &cluster, addr, &[]));
    let client = Client::new(&cluster, addr);
    let before = client.status(addr).await.unwrap();
    site.kill();
    site.restart();
    let started = Instant::now();
    let after = client.status(addr).await.unwrap();
    assert_eq!(before.site_id, after.site_id);
    // The client's request timeout is 10 s; a stale connection would have used it up.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    client.close().await;
}
