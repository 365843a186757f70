//! The live page (`/ui`) in a real browser: headless Chromium driven through
//! chromedriver (`ui_browser.py`). A cluster of three sites shows three live sites; a
//! fourth joins, throttled, and the page shows the rebalance's catch-up with its progress
//! bar; a site is SIGKILLed and the page shows it dead without a reload; a view of 100
//! sites × 512 shards is drawn within 2 s. Screenshots go to `target/ui-screenshots`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_tests::{Client, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

fn token(cluster: &Path) -> String {
    let out = Command::new(bin())
        .args(["cluster", "issue-token", "--cluster-dir"])
        .arg(cluster)
        .args(["--operator", "viewer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_sites_catch_ups_and_a_death_without_a_reload() {
    for (tool, package) in [("chromium", "chromium"), ("chromedriver", "chromium-driver")] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED: {tool} is not installed (apt-get install {package}; .ci/run does)");
            return;
        }
    }
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    let http_port = free_port();
    let spec = |i: usize, extra: Vec<String>| {
        let mut spec = SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
        spec.extra = extra;
        spec
    };
    let mut sites =
        vec![SiteProc::start(&spec(0, vec!["--http-listen".into(), format!("127.0.0.1:{http_port}")]))];
    for i in 1..3 {
        sites.push(SiteProc::start(&spec(i, Vec::new())));
    }
    let client = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&client, addrs[0], 3, Duration::from_secs(60)).await;
    client.create_db(addrs[0], "demo", 4, 2).await;
    let view = wait_for("demo placed", Duration::from_secs(60), async || {
        let view = client.view(addrs[0]).await.ok()?;
        let d = view.db(&"demo".parse().unwrap())?;
        (view.plans.is_empty()
            && d.placement.iter().all(|s| s.replicas.iter().filter(|r| r.is_ready()).count() == 2))
        .then_some(view)
    })
    .await;
    // Data, so that a new replica's catch-up (throttled below) takes a while.
    for shard in 0..4 {
        let holder = view.replicas(&"demo".parse().unwrap(), shard)[0].site_id;
        let at = view.site(holder).unwrap().addr.parse().unwrap();
        for round in 0..4 {
            let messages: Vec<Vec<u8>> =
                (0..100).map(|i| vec![b'a' + (i % 26) as u8; 4096 + round]).collect();
            client.publish(at, "demo", shard, &messages).await.unwrap();
        }
    }

    let driver_port = free_port();
    let mut driver = Command::new("chromedriver")
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let page = format!("https://localhost:{http_port}/ui?token={}", token(&cluster));
    std::thread::sleep(Duration::from_millis(500));
    let mut browser = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui_browser.py"))
        .args([&format!("http://127.0.0.1:{driver_port}"), &page, out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut tell = browser.stdin.take().unwrap();
    let mut next = || said.next().and_then(Result::ok).unwrap_or_default();

    let line = next();
    assert!(line.starts_with("THREE 3"), "{line}");
    // A fourth site joins, catching up at 200 KiB/s: the rebalance shows a progress bar.
    sites.push(SiteProc::start(&spec(3, vec!["--catch-up-limit".into(), "200".into()])));
    writeln!(tell, "go").unwrap();
    let line = next();
    assert!(line.starts_with("CATCHUP 4"), "{line}");
    // A site dies: the page shows it without a reload.
    let victim = sites[1].site_id.clone();
    sites[1].kill();
    writeln!(tell, "go").unwrap();
    let line = next();
    assert_eq!(line, format!("DEAD {victim}"), "{line}");
    let line = next();
    let ms: f64 = line.strip_prefix("RENDER ").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
    eprintln!("the page drew 100 sites × 512 shards in {ms:.0} ms; screenshots in {}", out.display());
    assert!(ms < 2000.0, "{ms} ms");
    assert!(browser.wait().unwrap().success());
    let _ = driver.kill();
    let _ = driver.wait();
    for name in ["ui-3-sites.png", "ui-rebalance.png", "ui-site-dead.png", "ui-100-sites-512-shards.png"] {
        assert!(out.join(name).metadata().is_ok_and(|m| m.len() > 1000), "{name}");
    }
    drop(sites);
}
