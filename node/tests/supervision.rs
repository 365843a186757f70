//! The task supervisor with real `cairn start` processes (its test hook
//! `CAIRN_TEST_PANIC=TASK[:N]` makes a task panic): a task that panics twice is started
//! again, the metric counts it, and the site goes on doing its work; a task that keeps
//! panicking stops the site with a non-zero exit naming it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cairn_tests::{Client, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for};

async fn metrics(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_restarted_counted_and_a_hopeless_one_stops_the_site() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let addr = loopback_addrs(1)[0];
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut spec = SiteSpec::new(bin, root.path(), "flaky", &cluster, addr, &[]);
    spec.prefix = vec!["env".into(), "CAIRN_TEST_PANIC=automation:2,replicator:1".into()];
    spec.extra = vec!["--metrics-listen".into(), metrics_addr.to_string()];
    let _site = SiteProc::start(&spec);
    let client = Client::new(&cluster, addr);
    let restarts = wait_for(
        "two automation restarts and one replicator restart counted",
        Duration::from_secs(30),
        async || {
            let text = metrics(metrics_addr).await?;
            (text.contains("cairn_task_restarts_total{task=\"automation\"} 2")
                && text.contains("cairn_task_restarts_total{task=\"replicator\"} 1"))
            .then_some(text)
        },
    )
    .await;
    assert!(restarts.contains("cairn_task_restarts_total{task=\"gossip_view\"} 0"), "{restarts}");
    // Automation (restarted) still places a new db on this lone site.
    client.create_db(addr, "after", 2, 1).await;
    wait_for("the db placed after the restarts", Duration::from_secs(30), async || {
        let view = client.view(addr).await.ok()?;
        let db = view.db(&cairn_inventory::DbName::new("after").unwrap())?;
        db.placement.iter().all(|s| s.replicas.iter().any(|r| r.is_ready())).then_some(())
    })
    .await;
    let stderr = std::fs::read_to_string(root.path().join("flaky.stderr")).unwrap_or_default();
    assert!(stderr.contains("task panicked; restarting it") && stderr.contains("automation"), "{stderr}");

    // A task that panics every time: after five failures the site exits 1, naming it.
    let addr = loopback_addrs(1)[0];
    let mut spec = SiteSpec::new(bin, root.path(), "hopeless", &cluster, addr, &[]);
    spec.prefix = vec!["env".into(), "CAIRN_TEST_PANIC=executor:1000".into()];
    let mut hopeless = SiteProc::start(&spec);
    let status = hopeless.wait_exit(Duration::from_secs(30)).expect("the site stops by itself");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let said = hopeless.stderr();
    assert!(said.contains("task executor failed 5 times in a row"), "{said}");
    client.close().await;
}
