//! `cairn start` as a real process: certificates (issued into the data dir, checked at
//! start, the CA key never read), `ctl status`, clean stop on SIGTERM, restart on the
//! same data dir, and a third-party QUIC client without the cluster certificate.

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

/// Starts a core site on `data`, its certificate first issued from the CA in `cluster`
/// if it has none.
fn start(data: &Path, cluster: &Path, port: u16) -> Running {
    if !data.join("tls/cert.pem").exists() {
        let args =
            ["cluster", "issue-cert", "--cluster-dir", cluster.to_str().unwrap(), "--site", "--data-dir"];
        let out = cairn(&[&args[..], &[data.to_str().unwrap()]].concat());
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["start", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
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
    let operator = root.path().join("cluster-operator");
    assert!(
        text(&out).contains(&format!("export CAIRN_CREDENTIALS={}", operator.display())),
        "{}",
        text(&out)
    );
    let status = cairn(&[
        "ctl",
        "--node",
        &node,
        "--credentials",
        operator.to_str().unwrap(),
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
        "--credentials",
        root.path().join("other-operator").to_str().unwrap(),
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
        "--operator",
        "alice",
        "--out",
        issued.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cairn://operator/alice"), "{}", text(&out));
    let ok = cairn(&["ctl", "--node", &node, "--credentials", issued.to_str().unwrap(), "status"]);
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
    let other_operator = root.path().join("other-operator");
    let (answered, said) = run(&[&other_operator.join("cert.pem"), &other_operator.join("key.pem")]);
    assert!(!answered, "aioquic with a foreign certificate got an answer: {said}");
    // The control: with the cluster's operator certificate the same client is answered.
    let operator = root.path().join("cluster-operator");
    let (answered, said) = run(&[&operator.join("cert.pem"), &operator.join("key.pem")]);
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

/// `cairn start` never reads the CA key: with the CA dir in its environment and no
/// certificate in its data dir it exits 1 at once, naming the command that issues one.
/// The key is a FIFO here, so a read of it would block the site for ever.
#[test]
fn a_site_without_a_certificate_names_the_command_and_never_reads_the_ca_key() {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    assert!(cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]).status.success());
    std::fs::remove_file(cluster.join("ca.key")).unwrap();
    let fifo = std::ffi::CString::new(cluster.join("ca.key").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let data = root.path().join("site");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["start", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .env("CAIRN_CLUSTER_DIR", &cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("cairn start without a certificate still running after 10 s (reading the CA key?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    let command =
        format!("cairn cluster issue-cert --cluster-dir CA_DIR --site --data-dir {}", data.display());
    assert!(said.contains(&command), "{said}");
}

/// A certificate for another data dir's site, or a private key others may read, keeps
/// a site from starting, each with the reason; the operator's tools say why as well.
#[test]
fn a_site_refuses_a_certificate_not_its_own_and_a_readable_key() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    assert!(cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]).status.success());
    let issue = |kind: &str, data: &Path| {
        let out = cairn(&[
            "cluster",
            "issue-cert",
            "--cluster-dir",
            cluster.to_str().unwrap(),
            kind,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let start = |data: &Path, extra: &[&str]| {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let args =
            [&["start", "--listen", &listen, "--data-dir", data.to_str().unwrap()][..], extra].concat();
        let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), text(&out))
    };
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let said = issue("--site", &a);
    assert!(said.contains("cairn://site/"), "{said}");
    issue("--site", &b);
    // b's data dir with a's certificate.
    std::fs::remove_dir_all(b.join("tls")).unwrap();
    copy_dir(&a.join("tls"), &b.join("tls"));
    let (code, said) = start(&b, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("the certificate names site/") && said.contains("issue it again"), "{said}");
    // A replicant's certificate on a site started as core, and the other way round.
    issue("--replicant", &b);
    let (code, said) = start(&b, &[]);
    assert!(code == Some(1) && said.contains("names replicant/"), "{said}");
    // A group-readable key.
    issue("--site", &b);
    std::fs::set_permissions(b.join("tls/key.pem"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, said) = start(&b, &[]);
    assert!(code == Some(1) && said.contains("chmod 600"), "{said}");
    // Credentials are never written into the CA dir.
    let out = cairn(&[
        "cluster",
        "issue-cert",
        "--cluster-dir",
        cluster.to_str().unwrap(),
        "--client",
        "app",
        "--out",
        cluster.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!cluster.join("cert.pem").exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).unwrap();
    }
}

/// Days left, by `ctl status --format json` at `node`.
fn certificate_days_left(node: &str, operator: &Path) -> f64 {
    let out = cairn(&[
        "ctl",
        "--node",
        node,
        "--credentials",
        operator.to_str().unwrap(),
        "status",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expires = json["certificate_expires_ms"].as_u64().unwrap() as f64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    (expires - now) / 86_400_000.0
}

fn dump_text(node: &str, operator: &Path) -> String {
    let out = cairn(&["dump", "--node", node, "--credentials", operator.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// A certificate about to expire is a warning in the dump; renewed with `issue-cert`
/// while its site runs, it is loaded on SIGHUP and on `ctl reload` and serves new
/// connections at once, with no restart; a broken renewal is refused and the site keeps
/// the certificate it has.
#[test]
fn a_renewed_certificate_is_reloaded_without_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    let operator = root.path().join("cluster-operator");
    assert!(cairn(&["cluster", "init", "--out", cluster.to_str().unwrap()]).status.success());
    let data = root.path().join("site");
    let issue = |days: &str| {
        let out = cairn(&[
            "cluster",
            "issue-cert",
            "--cluster-dir",
            cluster.to_str().unwrap(),
            "--site",
            "--data-dir",
            data.to_str().unwrap(),
            "--days",
            days,
        ]);
        assert!(out.status.success(), "{}", text(&out));
    };
    issue("10");
    let port = free_port();
    let node = format!("127.0.0.1:{port}");
    let site = start(&data, &cluster, port);
    let left = certificate_days_left(&node, &operator);
    assert!((9.9..10.1).contains(&left), "{left} days left");
    let deadline = Instant::now() + Duration::from_secs(10);
    let warned = loop {
        let dump = dump_text(&node, &operator);
        if dump.contains("certificate of site") || Instant::now() > deadline {
            break dump;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(warned.contains("expires in 9 days") && warned.contains("cairn ctl reload"), "{warned}");

    // Renewed while the site runs (its inventory is locked: the id comes from the
    // certificate there), then SIGHUP.
    issue("400");
    let hup = Command::new("kill").args(["-HUP", &site.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while certificate_days_left(&node, &operator) < 399.0 {
        assert!(Instant::now() < deadline, "SIGHUP did not load the renewed certificate");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while dump_text(&node, &operator).contains("certificate of site") {
        assert!(Instant::now() < deadline, "the expiry warning stayed after the renewal");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Renewed again, and loaded by `ctl reload`.
    issue("20");
    let out = cairn(&["ctl", "--node", &node, "--credentials", operator.to_str().unwrap(), "reload"]);
    assert!(out.status.success() && text(&out).contains("cairn://site/"), "{}", text(&out));
    let left = certificate_days_left(&node, &operator);
    assert!((19.9..20.1).contains(&left), "{left} days left after ctl reload");

    // A renewal for this very site by another cluster's CA: refused (it would cut the
    // site off from its cluster), naming both clusters.
    let current = cairn_transport::Credentials::load(&data.join("tls")).unwrap().identity().clone();
    let stranger = cairn_transport::ClusterCa::generate().unwrap();
    cairn_transport::tls::write_credentials(
        &data.join("tls"),
        &stranger,
        &stranger.issue(&current, 20).unwrap(),
    )
    .unwrap();
    let out = cairn(&["ctl", "--node", &node, "--credentials", operator.to_str().unwrap(), "reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("renewed certificate is of cluster"), "{}", text(&out));

    // A broken renewal: refused, and the site goes on with the certificate it has.
    std::fs::write(data.join("tls/cert.pem"), "not a certificate").unwrap();
    let out = cairn(&["ctl", "--node", &node, "--credentials", operator.to_str().unwrap(), "reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not reloaded"), "{}", text(&out));
    let left = certificate_days_left(&node, &operator);
    assert!((19.9..20.1).contains(&left), "{left} days left after a refused reload");
    drop(site);
}
