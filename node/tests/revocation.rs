//! Revocation against real `cairn start` processes: `cairn cluster revoke` on a running
//! site's id, and on an application's certificate file. Within a bounded number of
//! gossip rounds every other site refuses the revoked certificate's connections and
//! leaves the revoked site out of its view (a `forged` warning says why); a revoked
//! application can no longer publish; what the sites hold survives a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_gossip::view::Warning;
use cairn_inventory::SiteId;
use cairn_tests::{Client, SiteProc, SiteSpec, loopback_addrs, new_cluster_dir, wait_for};
use cairn_transport::{Credentials, Endpoint, Identity, PrincipalName, Request, TransportConfig};

/// The gossip interval `SiteProc` starts sites with.
const ROUND: Duration = Duration::from_millis(100);

fn cairn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().expect("cairn runs")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Whether credentials in `dir` still get a status answer from `at`.
async fn answered(dir: &Path, at: SocketAddr) -> bool {
    let credentials = Credentials::load(dir).unwrap();
    let config = TransportConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    };
    let endpoint = Endpoint::client(&credentials, config, at).unwrap();
    let request = if credentials.identity().is_site() {
        Request::Status
    } else {
        Request::Routes { db: cairn_inventory::DbName::new("none").unwrap() }
    };
    let ok = endpoint.request(at, &request).await.is_ok();
    endpoint.close().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_site_and_client_are_refused_everywhere_within_a_few_rounds() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let bin = Path::new(env!("CARGO_BIN_EXE_cairn"));
    let specs: Vec<SiteSpec> = (0..3)
        .map(|i| SiteSpec::new(bin, root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]))
        .collect();
    let mut sites: Vec<SiteProc> = specs.iter().map(SiteProc::start).collect();
    let client = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&client, addrs[0], 3, Duration::from_secs(60)).await;
    let operator = cairn_tests::operator_dir(&cluster);
    let revoked = client.status(addrs[2]).await.unwrap().site_id;
    let revoked_tls = root.path().join("s2").join("tls");
    assert!(answered(&revoked_tls, addrs[0]).await, "before: the site's certificate is answered");

    let app = cairn_tests::issue_credentials(
        &cluster,
        &Identity::Client(PrincipalName::new("app").unwrap()),
        &root.path().join("app"),
    );
    assert!(answered(&app, addrs[1]).await, "before: the application is answered");

    // Revoke the running site by id, through site 0.
    let node = addrs[0].to_string();
    let out = cairn(&[
        "cluster",
        "revoke",
        &revoked.to_string(),
        "--node",
        &node,
        "--credentials",
        operator.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the list now holds 2 entries"), "{}", text(&out));
    let started = Instant::now();
    let refused_everywhere = async || {
        for at in &addrs[..2] {
            let view = client.view(*at).await.ok()?;
            let forged = view.warnings.iter().any(|w| {
                matches!(w, Warning::Forged { site_id, message, .. } if *site_id == revoked && message.contains("was revoked"))
            });
            if view.site(revoked).is_some() || !forged || answered(&revoked_tls, *at).await {
                return None;
            }
        }
        Some(started.elapsed())
    };
    let took = wait_for(
        "the revoked site refused and out of every view",
        Duration::from_secs(30),
        refused_everywhere,
    )
    .await;
    let rounds = took.as_millis().div_ceil(ROUND.as_millis());
    eprintln!(
        "site revoked: refused by every site and out of every view after {took:?} ({rounds} gossip rounds)"
    );
    assert!(rounds <= 30, "{rounds} gossip rounds");

    // Revoke the application's certificate by its file, through site 1.
    let out = cairn(&[
        "cluster",
        "revoke",
        app.join("cert.pem").to_str().unwrap(),
        "--node",
        &addrs[1].to_string(),
        "--credentials",
        operator.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cairn://client/app") && text(&out).contains("3 entries"), "{}", text(&out));
    let started = Instant::now();
    wait_for("the application refused by sites 0 and 1", Duration::from_secs(30), async || {
        for at in &addrs[..2] {
            if answered(&app, *at).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("client certificate revoked: refused by every site after {:?}", started.elapsed());

    // Nonsense targets are usage errors; a site's certificate cannot revoke.
    let out =
        cairn(&["cluster", "revoke", "nobody", "--node", &node, "--credentials", operator.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = cairn(&[
        "cluster",
        "revoke",
        &SiteId::random().to_string(),
        "--node",
        &addrs[1].to_string(),
        "--credentials",
        root.path().join("s1").join("tls").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a site revoked something: {}", text(&out));

    // Restarted, site 1 still refuses the revoked site from its first handshake.
    sites[1].kill();
    sites[1] = SiteProc::start(&specs[1]);
    assert!(!answered(&revoked_tls, addrs[1]).await, "the revocation did not survive a restart");
    let view = client.view(addrs[1]).await.unwrap();
    assert_eq!(view.revocations.map(|l| l.entries.len()), Some(3));
    drop(sites);
}
