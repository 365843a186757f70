//! Plan delivery between real sites on loopback (in one process): the receiver stores
//! the plan in its inventory and answers by priority — for dbs it knows and shards they
//! have; a plan for a db it has not heard of is "not yet", one beyond the db's shards
//! is refused.

use std::sync::Arc;

use cairn_inventory::Role;
use cairn_inventory::{
    DbName, DbRecord, DbSettings, Hlc, Inventory, InventoryConfig, OfferOutcome, Plan, PlanId, PlanOrigin,
    Retention, SiteId, Step,
};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::tls;
use cairn_transport::{Request, Response};

fn options(root: &std::path::Path, cluster: &std::path::Path, i: usize) -> SiteOptions {
    let mut options = {
        let data_dir = root.join(format!("site{i}"));
        cairn_node::credentials::issue_site_from_dir(cluster, &data_dir, Role::Core).unwrap();
        SiteOptions::new(data_dir, "127.0.0.1:0".parse().unwrap())
    };
    // These tests look at delivery alone: the sites store plans but do not run them.
    options.run_plans = false;
    options
}

fn plan(db: &str, id: u128, priority: u32, via: SiteId) -> Plan {
    Plan {
        db: DbName::new(db).unwrap(),
        plan_id: PlanId(id),
        priority,
        origin: PlanOrigin::Operator { via },
        steps: vec![Step::AddReplica { shard: 0, upstreams: vec![via] }, Step::RemoveReplica { shard: 1 }],
    }
}

/// The operator's endpoint of the cluster `site` is in (its credentials beside the CA dir
/// under the same root): operator plans come from an operator, through any site.
fn operator(site: &Site) -> cairn_transport::Endpoint {
    let root = site.inventory.dir().parent().unwrap();
    let credentials = tls::Credentials::load(&root.join("cluster-operator")).unwrap();
    cairn_transport::Endpoint::client(&credentials, Default::default(), site.endpoint.local_addr()).unwrap()
}

/// `plan` offered to `to` by the operator, as if through `from` (the plan's `via`).
async fn schedule(from: &Site, to: &Site, plan: &Plan) -> Response {
    let _ = from;
    operator(to).request(to.endpoint.local_addr(), &Request::Schedule(plan.clone())).await.unwrap()
}

/// `site` learns of db `name` (4 shards), as gossip or a creation would tell it.
fn know(site: &Site, name: &str) {
    let settings = DbSettings::new(4, 2, Retention::default()).unwrap();
    let record =
        DbRecord::new(DbName::new(name).unwrap(), settings, Hlc { wall_ms: 1, logical: 0 }, SiteId(1));
    site.inventory.put_db(&record).unwrap();
}

async fn cluster(n: usize) -> (tempfile::TempDir, Vec<Site>) {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster).unwrap();
    let mut sites = Vec::new();
    for i in 0..n {
        sites.push(Site::start(options(root.path(), &cluster, i)).await.unwrap());
    }
    (root, sites)
}

#[tokio::test]
async fn two_sites_equal_lower_and_higher_priority() {
    let (root, sites) = cluster(2).await;
    let (a, b) = (&sites[0], &sites[1]);
    let me = a.inventory.identity().site_id;

    // Not known yet: the sender is told to come back (a transport error, so automation
    // delivers again next round), and nothing is stored.
    let first = plan("orders", 1, 5, me);
    let early = operator(b).request(b.endpoint.local_addr(), &Request::Schedule(first.clone())).await;
    let error = early.unwrap_err().to_string();
    assert!(error.contains("not known here yet"), "{error}");
    assert!(b.inventory.pending_plan(&DbName::new("orders").unwrap()).unwrap().is_none());
    know(b, "orders");
    // A step beyond the db's shards is refused outright.
    let mut wide = plan("orders", 9, 5, me);
    wide.steps.push(Step::RemoveReplica { shard: 4 });
    let refused = schedule(a, b, &wide).await;
    assert!(matches!(&refused, Response::Rejected { reason } if reason.contains("shard 4")), "{refused:?}");

    assert_eq!(schedule(a, b, &first).await, Response::Scheduled(OfferOutcome::Accepted));
    assert_eq!(
        schedule(a, b, &first).await,
        Response::Scheduled(OfferOutcome::AlreadyPending),
        "same plan twice"
    );
    let equal = plan("orders", 2, 5, me);
    let ignored = OfferOutcome::Ignored { current: PlanId(1), current_priority: 5 };
    assert_eq!(schedule(a, b, &equal).await, Response::Scheduled(ignored.clone()));
    let lower = plan("orders", 3, 1, me);
    assert_eq!(schedule(a, b, &lower).await, Response::Scheduled(ignored));
    let higher = plan("orders", 4, 9, me);
    assert_eq!(schedule(a, b, &higher).await, Response::Scheduled(OfferOutcome::Replaced { old: PlanId(1) }));
    // The replaced plan is finished for good: offering it again does not revive it.
    assert!(matches!(schedule(a, b, &first).await, Response::Scheduled(OfferOutcome::AlreadyEnded { .. })));
    // An empty plan is rejected with the reason.
    let mut empty = plan("orders", 5, 50, me);
    empty.steps.clear();
    assert_eq!(schedule(a, b, &empty).await, Response::Rejected { reason: "plan has no steps".into() });

    // Persisted: after the site stops, its inventory holds the higher plan.
    let dir = b.inventory.dir().to_owned();
    let sites: Vec<Site> = sites;
    for site in sites {
        site.shutdown().await;
    }
    let cluster_id = tls::Credentials::load(&dir.join("tls")).unwrap().cluster_id();
    let inv = Inventory::open(&dir, cluster_id, InventoryConfig::default()).unwrap();
    let pending = inv.pending_plan(&DbName::new("orders").unwrap()).unwrap().unwrap();
    assert_eq!((pending.plan_id, pending.priority, pending.done), (PlanId(4), 9, 0));
    assert_eq!(pending.remaining, higher.steps);
    drop(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sites_each_deliver_to_every_other() {
    let (_root, sites) = cluster(5).await;
    for (i, site) in sites.iter().enumerate() {
        know(site, &format!("d{i}"));
    }
    let sites = Arc::new(sites);
    // Every site offers a plan for db "d<target>" to every other site; priorities rise
    // with the sender's index, so the last sender's plan wins everywhere.
    for (from_index, from) in sites.iter().enumerate() {
        for (to_index, to) in sites.iter().enumerate() {
            if from_index == to_index {
                continue;
            }
            let p = plan(
                &format!("d{to_index}"),
                (from_index * 10 + to_index) as u128 + 1,
                from_index as u32,
                SiteId(1),
            );
            let response = schedule(from, to, &p).await;
            assert!(matches!(response, Response::Scheduled(_)), "{from_index}→{to_index}: {response:?}");
        }
    }
    for (to_index, to) in sites.iter().enumerate() {
        let pending =
            to.inventory.pending_plan(&DbName::new(format!("d{to_index}")).unwrap()).unwrap().unwrap();
        let winner = if to_index == 4 { 3 } else { 4 };
        assert_eq!(pending.plan_id, PlanId((winner * 10 + to_index) as u128 + 1), "site {to_index}");
        assert_eq!(
            to.inventory.plan_history(&pending.db).unwrap().len(),
            3,
            "three replaced plans at site {to_index}"
        );
    }
}
