//! 100 sites in one process, over chitchat's in-memory transport: every view converges
//! to all 100 live sites, and one site's new db reaches every view.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_gossip::signed::SigningKeys;
use cairn_gossip::summary::{Label, SiteSummary};
use cairn_gossip::{Gossip, GossipConfig, SiteSnapshot, SiteState};
use cairn_inventory::{ClusterId, DbName, DbRecord, DbSettings, Hlc, Retention, Role, SiteId};
use cairn_transport::{ClusterCa, Credentials, Identity, PrincipalName};
use chitchat::transport::ChannelTransport;

const N: usize = 100;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
}

fn snapshot(i: usize) -> SiteSnapshot {
    SiteSnapshot {
        revocations: None,
        site: SiteSummary {
            drain: None,
            role: Role::Core,
            addr: Label::truncated(&addr(i).to_string()),
            version: Label::truncated("test"),
            started_ms: 0,
            zone: Some(Label::truncated(&format!("z{}", i % 3))),
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
        },
        dbs: vec![],
        replicas: vec![],
        plans: vec![],
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sites_converge() {
    let transport = ChannelTransport::with_mtu(65_507);
    let config = GossipConfig {
        interval: Duration::from_millis(100),
        seeds: (0..3).map(|i| addr(i).to_string()).collect(),
        ..GossipConfig::default()
    };
    let ca = ClusterCa::generate().unwrap();
    let mut sites = Vec::new();
    for i in 0..N {
        let id = SiteId(i as u128 + 1);
        let credentials =
            Credentials::from_pem(ca.cert_pem(), &ca.issue(&Identity::Site(id), 1).unwrap()).unwrap();
        let keys = Arc::new(SigningKeys::new(credentials.signer().unwrap()));
        let trust = credentials.trust().unwrap();
        sites.push(
            Gossip::start(id, ClusterId(7), addr(i), &transport, config.clone(), &snapshot(i), keys, trust)
                .await
                .unwrap(),
        );
    }
    let all_live = |sites: &[Gossip]| {
        sites.iter().all(|g| {
            let v = g.view();
            v.sites.len() == N && v.sites.iter().all(|s| s.state == SiteState::Live)
        })
    };
    let took =
        wait_until("every view has 100 live sites", Duration::from_secs(60), || all_live(&sites)).await;
    eprintln!("100 sites: every view complete after {took:?}");

    let mut changed = snapshot(7);
    let operator = Credentials::from_pem(
        ca.cert_pem(),
        &ca.issue(&Identity::Operator(PrincipalName::new("ops").unwrap()), 1).unwrap(),
    )
    .unwrap();
    let mut orders = DbRecord::new(
        DbName::new("orders").unwrap(),
        DbSettings::new(8, 3, Retention::default()).unwrap(),
        Hlc { wall_ms: 1, logical: 0 },
        SiteId(8),
    );
    orders.seal = Some(operator.signer().unwrap().seal(&orders));
    changed.dbs.push(orders);
    assert_eq!(sites[7].publish(&changed).await, 1, "only the new key is published");
    let name = DbName::new("orders").unwrap();
    let took = wait_until("the new db is in every view", Duration::from_secs(30), || {
        sites.iter().all(|g| g.view().db(&name).is_some_and(|d| d.shards() == 8 && d.origin == SiteId(8)))
    })
    .await;
    eprintln!("100 sites: one new key everywhere after {took:?}");
    assert_eq!(sites[7].publish(&changed).await, 0, "nothing changed, nothing published");
    for g in sites {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_clusters_view_stays_the_same_round_after_round() {
    let transport = ChannelTransport::with_mtu(65_507);
    let config = GossipConfig {
        interval: Duration::from_millis(50),
        seeds: vec![addr(0).to_string()],
        ..GossipConfig::default()
    };
    let ca = ClusterCa::generate().unwrap();
    let mut sites = Vec::new();
    for i in 0..5 {
        let id = SiteId(i as u128 + 1);
        let credentials =
            Credentials::from_pem(ca.cert_pem(), &ca.issue(&Identity::Site(id), 1).unwrap()).unwrap();
        let keys = Arc::new(SigningKeys::new(credentials.signer().unwrap()));
        let trust = credentials.trust().unwrap();
        sites.push(
            Gossip::start(id, ClusterId(7), addr(i), &transport, config.clone(), &snapshot(i), keys, trust)
                .await
                .unwrap(),
        );
    }
    wait_until("every view has 5 live sites", Duration::from_secs(20), || {
        sites.iter().all(|g| g.view().sites.iter().filter(|s| s.state == SiteState::Live).count() == 5)
    })
    .await;
    // Heartbeats go on every round; the views (what wakes the replicator, the executor
    // and automation) do not change.
    let mut watchers: Vec<_> = sites.iter().map(Gossip::subscribe).collect();
    for w in &mut watchers {
        w.mark_unchanged();
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(watchers.iter().all(|w| !w.has_changed().unwrap()), "an idle view changed");
    // A site killed: its state changes, and from then on when it was last seen is known.
    sites.pop().unwrap().shutdown().await;
    wait_until("the stopped site is dead everywhere", Duration::from_secs(30), || {
        sites
            .iter()
            .all(|g| g.view().sites.iter().any(|s| s.state == SiteState::Dead && s.last_seen_ms.is_some()))
    })
    .await;
    for g in sites {
        g.shutdown().await;
    }
}
