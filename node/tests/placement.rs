//! Automation end to end: a db created on one site is allocated by the planner of
//! record, plans are delivered and executed, and every shard reaches its replication
//! factor on distinct sites, balanced.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_gossip::GossipConfig;
use cairn_inventory::Role;
use cairn_inventory::{DbName, Retention};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::{Response, tls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_place_16_shards_times_2_balanced() {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster).unwrap();
    let mut sites: Vec<Site> = Vec::new();
    for i in 0..3 {
        let mut options = {
            let data_dir = root.path().join(format!("s{i}"));
            cairn_node::credentials::issue_site_from_dir(&cluster, &data_dir, Role::Core).unwrap();
            SiteOptions::new(data_dir, "127.0.0.1:0".parse().unwrap())
        };
        let seeds = sites.first().map(|s: &Site| s.endpoint.local_addr().to_string()).into_iter().collect();
        options.gossip =
            GossipConfig { interval: Duration::from_millis(100), seeds, ..GossipConfig::default() };
        sites.push(Site::start(options).await.unwrap());
    }
    let name = DbName::new("events").unwrap();
    let create = cairn_transport::operator::DbChange::Create {
        name: name.clone(),
        settings: cairn_inventory::DbSettings::new(16, 2, Retention::default()).expect("settings in range"),
    };
    let operator = tls::Credentials::load(&root.path().join("cluster-operator")).unwrap();
    let operator =
        cairn_transport::Endpoint::client(&operator, Default::default(), sites[2].endpoint.local_addr())
            .unwrap();
    let signer = tls::Credentials::load(&root.path().join("cluster-operator")).unwrap().signer().unwrap();
    let answer =
        cairn_transport::operator::change_db(&operator, sites[2].endpoint.local_addr(), &signer, &create)
            .await
            .unwrap();
    assert_eq!(answer, Response::DbCreated { created: true });

    let start = Instant::now();
    let view = loop {
        let view = sites[1].view();
        let placed = view.db(&name).is_some_and(|d| {
            d.placement.iter().all(|s| s.replicas.iter().filter(|r| r.is_ready()).count() == 2)
        });
        if placed && view.plans.is_empty() {
            break view;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not placed within 30 s: {:?}", view.warnings);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("16 × 2 placed and ready on 3 sites after {:?}", start.elapsed());
    let db = view.db(&name).unwrap();
    let mut per_site: BTreeMap<_, u32> = BTreeMap::new();
    for shard in &db.placement {
        assert_ne!(
            shard.replicas[0].site_id, shard.replicas[1].site_id,
            "shard {} twice on one site",
            shard.shard
        );
        for r in &shard.replicas {
            *per_site.entry(r.site_id).or_default() += 1;
        }
    }
    let counts: Vec<u32> = per_site.values().copied().collect();
    assert_eq!(counts.len(), 3);
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
    // Each site's inventory agrees with the view, and its plan ended as completed.
    for site in &sites {
        let held = site.inventory.replicas(Some(&name)).unwrap().len() as u32;
        assert_eq!(held, per_site[&site.inventory.identity().site_id]);
        let history = site.inventory.plan_history(&name).unwrap();
        assert!(matches!(history.last().map(|h| &h.end), Some(cairn_inventory::PlanEnd::Completed)));
    }
    for site in sites {
        site.shutdown().await;
    }
}
