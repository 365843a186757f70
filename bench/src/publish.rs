//! Publish throughput and replication lag (part of the `catchup` scenario).
//!
//! Three sites run in this process on loopback (real endpoints, gossip, inventories on
//! disk), each with a ready replica of one shard, following each other.
//!
//! - Throughput: 1, 8 and 64 clients — each its own QUIC endpoint and connection —
//!   publish one 256-byte message per request to the same site, back to back, for a
//!   set time. Every acknowledged entry is durably committed. Baseline: durable LMDB
//!   commits of one entry each (raw heed, one writer) — what one entry per commit costs
//!   on this disk without any network.
//! - Lag: single entries published one at a time at the first site; the time from the
//!   acknowledgement until both other replicas hold the entry (their frontiers cover
//!   it), median and p99. Baseline: one request round trip plus one single-entry
//!   durable commit, the least one replication hop costs, measured in the same run.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_inventory::Role;
use cairn_inventory::{
    DbName, DbRecord, DbSettings, EntryId, Hlc, InventoryConfig, ReplicaState, Retention, SiteId,
};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::{Credentials, Endpoint, Request, Response, TransportConfig, tls};
use serde_json::json;

use crate::report::{Measurement, Reporter};

const MESSAGE: usize = 256;
const SITES: usize = 3;

/// Sizes of one run.
struct Sizes {
    /// How long each client count publishes.
    publish_for: Duration,
    /// Lag probes.
    probes: usize,
    /// Single-entry commits of the baseline.
    commits: usize,
}

pub(crate) fn run(reporter: &Reporter, smoke: bool) -> anyhow::Result<()> {
    let sizes = if smoke {
        Sizes { publish_for: Duration::from_secs(2), probes: 100, commits: 300 }
    } else {
        Sizes { publish_for: Duration::from_secs(10), probes: 1000, commits: 3000 }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(reporter, &sizes))
}

async fn measure(reporter: &Reporter, sizes: &Sizes) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster)?;
    let db = DbName::new("bench")?;
    let sites = start_sites(root.path(), &cluster, &db).await?;
    let credentials = Credentials::load(&tls::operator_dir_beside(&cluster))?;
    let target = sites[0].endpoint.local_addr();
    let outcome = async {
        let commit_rate = single_commits(sizes.commits)?;
        for clients in [1, 8, 64] {
            let rate = publish_rate(&credentials, target, &db, clients, sizes.publish_for).await?;
            reporter.record(&Measurement {
                scenario: "catchup",
                name: format!("publish to one replica, {clients} client(s)"),
                unit: "entries/s",
                ours: rate,
                baseline_name: "raw LMDB durable commits of one entry, one writer".into(),
                baseline: commit_rate,
                ratio: rate / commit_rate,
                aim: None,
                params: json!({ "clients": clients, "message_bytes": MESSAGE,
                    "seconds": sizes.publish_for.as_secs_f64(), "replicas": SITES }),
                runs: json!({ "ours": [rate], "lmdb_commits": [commit_rate] }),
            })?;
        }
        let lags = replication_lag(&credentials, &sites, &db, sizes.probes).await?;
        let hop = one_hop(&credentials, target).await? + 1.0 / commit_rate;
        // The aim: p99 at most 3× one hop.
        for (name, q, aim) in [("median", 0.5, None), ("p99", 0.99, Some(1.0 / 3.0))] {
            let ms = quantile(&lags, q) * 1e3;
            reporter.record(&Measurement {
                scenario: "catchup",
                name: format!("replication lag to 2 other replicas, {name}"),
                unit: "ms",
                ours: ms,
                baseline_name: "request round trip + one single-entry durable commit".into(),
                baseline: hop * 1e3,
                // Lower is better: the ratio is baseline / ours, at most about 1.
                ratio: hop * 1e3 / ms,
                aim,
                params: json!({ "probes": sizes.probes, "message_bytes": MESSAGE, "replicas": SITES }),
                runs: json!({ "ours": [ms], "baseline": [hop * 1e3] }),
            })?;
        }
        anyhow::Ok(())
    }
    .await;
    for site in sites {
        site.shutdown().await;
    }
    outcome
}

/// The creation of `db` with one shard of `replicas` replicas, sealed as an operator's.
pub(crate) fn one_shard_db(cluster: &Path, db: &DbName, replicas: u32) -> DbRecord {
    cairn_tests::sealed(
        cluster,
        DbRecord::new(
            db.clone(),
            DbSettings::new(1, replicas, Retention::default()).expect("settings in range"),
            Hlc { wall_ms: cairn_inventory::now_ms(), logical: 0 },
            SiteId(1),
        ),
    )
}

/// Three sites, each with a ready replica of `db`'s one shard, live in each other's views.
pub(crate) async fn start_sites(root: &Path, cluster: &Path, db: &DbName) -> anyhow::Result<Vec<Site>> {
    let mut sites: Vec<Site> = Vec::new();
    // One creation every site holds.
    let record = one_shard_db(cluster, db, SITES as u32);
    for i in 0..SITES {
        let mut o = {
            let data_dir = root.join(format!("s{i}"));
            cairn_node::credentials::issue_site_from_dir(cluster, &data_dir, Role::Core)
                .expect("issuing a site certificate");
            SiteOptions::new(data_dir, "127.0.0.1:0".parse()?)
        };
        o.gossip.interval = Duration::from_millis(100);
        // Replicas are placed by hand here: no automatic repair or rebalance.
        o.auto_repair = false;
        o.auto_rebalance = false;
        o.inventory = InventoryConfig { map_size: 1 << 30, ..InventoryConfig::default() };
        if let Some(first) = sites.first() {
            o.gossip.seeds = vec![first.endpoint.local_addr().to_string()];
        }
        let site = Site::start(o).await?;
        site.inventory.put_db(&record)?;
        site.inventory.set_replica(db, 0, ReplicaState::Ready)?;
        sites.push(site);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for site in &sites {
        while ready_replicas(&site.view(), db) < SITES {
            anyhow::ensure!(Instant::now() < deadline, "the sites never saw each other's replicas");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(sites)
}

fn ready_replicas(view: &cairn_gossip::ClusterView, db: &DbName) -> usize {
    let Some(shard) = view.db(db).and_then(|d| d.placement.first()) else { return 0 };
    shard.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count()
}

pub(crate) fn client(credentials: &Credentials, target: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::client(credentials, TransportConfig::default(), target)?)
}

async fn publish_one(endpoint: &Endpoint, target: SocketAddr, db: &DbName) -> anyhow::Result<EntryId> {
    let message = serde_bytes::ByteBuf::from((0..MESSAGE).map(|_| rand::random::<u8>()).collect::<Vec<_>>());
    let request = Request::Publish { db: db.clone(), shard: 0, messages: vec![message] };
    match endpoint.request(target, &request).await? {
        Response::Published { ids } if ids.len() == 1 => Ok(ids[0]),
        other => anyhow::bail!("publish answered {other:?}"),
    }
}

/// Acknowledged entries per second, `clients` publishing back to back for `span`.
async fn publish_rate(
    credentials: &Credentials,
    target: SocketAddr,
    db: &DbName,
    clients: usize,
    span: Duration,
) -> anyhow::Result<f64> {
    let endpoints = (0..clients).map(|_| client(credentials, target)).collect::<anyhow::Result<Vec<_>>>()?;
    // Connect every client first, so the handshakes are not timed.
    for endpoint in &endpoints {
        publish_one(endpoint, target, db).await?;
    }
    let start = Instant::now();
    let tasks: Vec<_> = endpoints
        .iter()
        .map(|endpoint| {
            let (endpoint, db) = (endpoint.clone(), db.clone());
            tokio::spawn(async move {
                let mut acked = 0u64;
                while start.elapsed() < span {
                    publish_one(&endpoint, target, &db).await?;
                    acked += 1;
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task.await.context("publish client")??;
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    for endpoint in endpoints {
        endpoint.close().await;
    }
    Ok(rate)
}

/// Seconds from each probe's acknowledgement until every other replica holds it.
async fn replication_lag(
    credentials: &Credentials,
    sites: &[Site],
    db: &DbName,
    probes: usize,
) -> anyhow::Result<Vec<f64>> {
    let target = sites[0].endpoint.local_addr();
    let endpoint = client(credentials, target)?;
    let mut lags = Vec::with_capacity(probes);
    for _ in 0..probes {
        // Subscribe before publishing, so no growth is missed.
        let mut grew: Vec<_> = sites[1..].iter().map(|s| (s, s.data.signals.subscribe(db, 0))).collect();
        let id = publish_one(&endpoint, target, db).await?;
        let acked = Instant::now();
        for (site, signal) in &mut grew {
            loop {
                if site.inventory.frontier(db, 0)?.get(id.origin) >= id.seq {
                    break;
                }
                tokio::time::timeout(Duration::from_secs(10), signal.changed())
                    .await
                    .context("an entry did not reach every replica within 10 s")??;
            }
        }
        lags.push(acked.elapsed().as_secs_f64());
    }
    endpoint.close().await;
    lags.sort_by(f64::total_cmp);
    Ok(lags)
}

/// Median seconds of one `Status` round trip from a client.
pub(crate) async fn one_hop(credentials: &Credentials, target: SocketAddr) -> anyhow::Result<f64> {
    let endpoint = client(credentials, target)?;
    endpoint.request(target, &Request::Status).await?;
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        endpoint.request(target, &Request::Status).await?;
        times.push(start.elapsed().as_secs_f64());
    }
    endpoint.close().await;
    times.sort_by(f64::total_cmp);
    Ok(quantile(&times, 0.5))
}

/// Durable single-entry commits per second, raw heed, one writer.
pub(crate) fn single_commits(commits: usize) -> anyhow::Result<f64> {
    let data: Vec<Vec<Vec<u8>>> =
        (0..commits).map(|_| vec![(0..MESSAGE).map(|_| rand::random()).collect()]).collect();
    crate::store::raw_heed(&data)
}

/// The `q` quantile of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
