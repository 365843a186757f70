//! Who may do what, with real processes and real certificates: a replicant's, an
//! application's and a core site's certificate each try `db drop`, `drain`, `plan apply`
//! and a `Schedule` of removals at the highest priority — all `Forbidden`, counted in
//! the metrics, and nothing changes; a pull naming another site as its receiver is
//! refused; an application may publish and read but not ask for the cluster's status;
//! the operator's certificate does everything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_inventory::{DbName, Frontier, Plan, PlanId, PlanOrigin, SiteId, Step};
use cairn_tests::hosted::settled;
use cairn_tests::{
    Client, SiteProc, SiteSpec, ctl, ctl_as, free_port, issue_credentials, issue_site_cert, loopback_addrs,
    new_cluster_dir, wait_for, wait_live_sites,
};
use cairn_transport::tls::{Identity, PrincipalName};
use cairn_transport::{PullFrame, PullRequest, Request};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

fn metrics(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn forbidden_count(text: &str, kind: &str) -> f64 {
    let name = format!("cairn_requests_total{{kind=\"{kind}\",outcome=\"forbidden\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// `RemoveReplica` of every shard at `u32::MAX`: what a rogue member would send.
fn removals(db: &str, shards: u32, planner: SiteId) -> Request {
    Request::Schedule(Plan {
        db: DbName::new(db).unwrap(),
        plan_id: PlanId(0xbad),
        priority: u32::MAX,
        origin: PlanOrigin::Automatic { planner },
        steps: (0..shards).map(|shard| Step::RemoveReplica { shard }).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_may_send_only_what_the_table_allows() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(3);
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sites: Vec<SiteProc> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let mut spec = SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, *addr, &addrs[..1]);
            if i == 0 {
                spec.extra = vec!["--metrics-listen".into(), metrics_addr.to_string()];
            }
            SiteProc::start(&spec)
        })
        .collect();
    let operator = Client::new(&cluster, addrs[0]);
    wait_live_sites(&operator, addrs[0], 3, Duration::from_secs(60)).await;
    operator.create_db(addrs[0], "events", 4, 2).await;
    let before = wait_for("events placed", Duration::from_secs(60), async || {
        let view = operator.view(addrs[0]).await.ok()?;
        settled(&view, "events", 2).then_some(view)
    })
    .await;

    // The three identities that are not operators.
    let app = issue_credentials(
        &cluster,
        &Identity::Client(PrincipalName::new("app").unwrap()),
        &root.path().join("app"),
    );
    issue_site_cert(bin(), &cluster, &root.path().join("replicant"), true);
    let replicant: PathBuf = root.path().join("replicant/tls");
    let site: PathBuf = sites[1].data_dir.join("tls");
    let site_id: SiteId = sites[1].site_id.parse().unwrap();
    for (who, creds) in [("client", &app), ("replicant", &replicant), ("site", &site)] {
        for args in [
            &["db", "drop", "events", "--yes"][..],
            &["drain"],
            &["plan", "apply", "rebalance"],
            &["db", "set", "events", "--replication", "1"],
        ] {
            let (ok, said) = ctl_as(bin(), creds, addrs[0], args);
            assert!(
                !ok && said.contains("Forbidden") && said.contains("may not send"),
                "{who} {args:?}: {said}"
            );
        }
        let client = Client::with_credentials(creds, addrs[0]);
        let planner = if who == "site" { site_id } else { SiteId(7) };
        match client.request(addrs[0], &removals("events", 4, planner)).await {
            Err(said) => assert!(said.contains("Forbidden"), "{who}: {said}"),
            Ok(answer) => panic!("{who}'s removals were answered {answer:?}"),
        }
        client.close().await;
    }
    // An application publishes and reads; it does not see the cluster's status.
    let (ok, said) = ctl_as(bin(), &app, addrs[0], &["publish", "events", "--topic", "t/1", "from-the-app"]);
    assert!(ok, "{said}");
    let (ok, said) = ctl_as(bin(), &app, addrs[0], &["read", "events", "--format", "json"]);
    assert!(ok && said.contains("from-the-app"), "{said}");
    let (ok, said) = ctl_as(bin(), &app, addrs[0], &["status"]);
    assert!(!ok && said.contains("Forbidden"), "{said}");

    // A pull naming another site than the one the certificate names.
    let creds = cairn_transport::Credentials::load(&site).unwrap();
    let endpoint = cairn_transport::Endpoint::client(&creds, Default::default(), addrs[0]).unwrap();
    let someone_else = PullRequest {
        db: DbName::new("events").unwrap(),
        shard: 0,
        frontier: Frontier::default(),
        cursor: 0,
        follow: false,
        receiver: SiteId(7),
        receiver_own_seq: 0,
    };
    let mut stream = endpoint.pull(addrs[0], &someone_else).await.unwrap();
    match stream.next().await {
        Ok(Some(PullFrame::Refused { reason })) => assert!(reason.contains("receiver"), "{reason}"),
        other => panic!("a pull for another receiver got {other:?}"),
    }
    endpoint.close().await;

    // Nothing changed: the same replicas everywhere, no plan, no site draining.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = operator.view(addrs[2]).await.unwrap();
    let placement = |v: &cairn_gossip::ClusterView| {
        let db = v.db(&DbName::new("events").unwrap()).expect("events still there");
        (db.settings.replication, db.placement.iter().map(|s| s.replicas.len()).collect::<Vec<_>>())
    };
    assert_eq!(placement(&after), placement(&before));
    assert!(after.plans.is_empty() && after.sites.iter().all(|s| !s.draining), "{:?}", after.plans);
    let text = metrics(metrics_addr);
    // (An application's `plan apply` is refused at its first request, the dump, and its
    // `drain` at the status that names the site the order is for.)
    for (kind, at_least) in
        [("drop_db", 3.0), ("set_draining", 2.0), ("plan_preview", 2.0), ("schedule", 3.0)]
    {
        let n = forbidden_count(&text, kind);
        assert!(n >= at_least, "{kind}: {n} forbidden counted");
    }
    eprintln!(
        "forbidden, as counted by site 0: {}",
        text.lines().filter(|l| l.contains("forbidden")).count()
    );

    // The operator may: drain and undrain, then drop the db.
    let (ok, said) = ctl(bin(), &cluster, addrs[2], &["drain"]);
    assert!(ok, "{said}");
    let (ok, said) = ctl(bin(), &cluster, addrs[2], &["drain", "--off"]);
    assert!(ok, "{said}");
    let (ok, said) = ctl(bin(), &cluster, addrs[0], &["db", "drop", "events", "--yes"]);
    assert!(ok, "{said}");
    operator.close().await;
    drop(sites);
}
