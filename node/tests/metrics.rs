//! `cairn start --metrics-listen`: a real site serves Prometheus metrics over HTTP that
//! follow what it does (sites, replicas, requests, gossip, pulled data), answers 404
//! elsewhere, and a taken metrics port stops the start with a clear error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use cairn_tests::{
    Client, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for, wait_live_sites,
};

/// A plain HTTP/1.1 GET: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the metric line starting with `name` (name and labels, exactly).
fn value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_serves_metrics_that_follow_what_it_does() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(2);
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let metrics: Vec<SocketAddr> = (0..2).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let _sites: Vec<SiteProc> = (0..2)
        .map(|i| {
            let mut spec = SiteSpec::new(bin, root.path(), &format!("m{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra = vec!["--metrics-listen".into(), metrics[i].to_string()];
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    wait_live_sites(&client, addrs[0], 2, Duration::from_secs(60)).await;
    client.create_db(addrs[0], "m", 4, 2).await;
    wait_for("the db placed, as both sites see it", Duration::from_secs(60), async || {
        let (_, body) = get(metrics[1], "/metrics");
        let (_, first) = get(metrics[0], "/metrics");
        (value(&body, "cairn_replicas{state=\"ready\"}") == Some(4.0)
            && value(&first, "cairn_under_replicated_shards") == Some(0.0))
        .then_some(())
    })
    .await;
    let messages: Vec<Vec<u8>> = (0..50).map(|i| format!("metric-{i}").into_bytes()).collect();
    client.publish(addrs[0], "m", 0, &messages).await.unwrap();

    let (status, body) = get(metrics[0], "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(value(&body, "cairn_sites{state=\"live\"}"), Some(2.0), "{body}");
    assert_eq!(value(&body, "cairn_sites{state=\"dead\"}"), Some(0.0), "{body}");
    assert_eq!(value(&body, "cairn_replicas{state=\"ready\"}"), Some(4.0), "{body}");
    assert_eq!(value(&body, "cairn_under_replicated_shards"), Some(0.0), "{body}");
    assert_eq!(value(&body, "cairn_plans_running"), Some(0.0), "{body}");
    assert!(value(&body, "cairn_plan_steps_done_total").unwrap() >= 4.0, "{body}");
    assert!(value(&body, "cairn_requests_total{kind=\"publish\",outcome=\"ok\"}").unwrap() >= 1.0, "{body}");
    assert!(
        value(&body, "cairn_gossip_total{direction=\"sent\",what=\"messages\"}").unwrap() > 0.0,
        "{body}"
    );
    assert!(
        value(&body, "cairn_gossip_total{direction=\"received\",what=\"bytes\"}").unwrap() > 0.0,
        "{body}"
    );
    // Everything on the wire, counted at the UDP socket: more than gossip's payloads alone.
    let wire = value(&body, "cairn_udp_total{direction=\"sent\",what=\"bytes\"}").unwrap();
    let gossip = value(&body, "cairn_gossip_total{direction=\"sent\",what=\"bytes\"}").unwrap();
    assert!(wire > gossip, "{body}");
    assert!(
        value(&body, "cairn_udp_total{direction=\"received\",what=\"datagrams\"}").unwrap() > 0.0,
        "{body}"
    );
    // One connection to the other site at least (gossip and requests share it), whose
    // handshake was counted; nothing refused.
    assert!(value(&body, "cairn_connections").unwrap() >= 1.0, "{body}");
    assert!(value(&body, "cairn_connection_events_total{event=\"handshake_ok\"}").unwrap() >= 1.0, "{body}");
    assert_eq!(value(&body, "cairn_connection_events_total{event=\"refused\"}"), Some(0.0), "{body}");
    assert!(value(&body, "cairn_gossip_dropped_total").is_some(), "{body}");
    // The site's own gossiped state: its summary keys and its certificate, signed.
    assert!(value(&body, "cairn_gossip_published{what=\"keys\"}").unwrap() >= 3.0, "{body}");
    assert!(value(&body, "cairn_gossip_published{what=\"bytes\"}").unwrap() > 500.0, "{body}");
    assert!(value(&body, "cairn_inventory_bytes").unwrap() > 0.0, "{body}");
    assert!(body.contains("# HELP cairn_lost_shards"), "{body}");
    // The other replica of shard 0 follows the write: its pulled entries count it.
    wait_for("the follower's pulled entries", Duration::from_secs(30), async || {
        let (_, body) = get(metrics[1], "/metrics");
        (value(&body, "cairn_pulled_total{what=\"entries\"}")? >= 50.0).then_some(())
    })
    .await;

    let (status, body) = get(metrics[0], "/nothing");
    assert!(status.contains("404") && body.contains("/metrics"), "{status} {body}");
    client.close().await;

    // A taken metrics port: the site does not start, and says why.
    cairn_tests::issue_site_cert(bin, &cluster, &root.path().join("m2"), false);
    let out = std::process::Command::new(bin)
        .args(["start", "--data-dir"])
        .arg(root.path().join("m2"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--metrics-listen",
            &metrics[0].to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot serve metrics on {}", metrics[0])), "{stderr}");
}
