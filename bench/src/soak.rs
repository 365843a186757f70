//! `soak` (opt-in; not part of `all` or `--smoke`): a mixed load for a set time while a
//! site is SIGKILLed and restarted on a schedule, with every site's memory sampled.
//!
//! Real `cairn start` processes (see [`crate::failure::cairn_binary`]): four sites, a db
//! of 8 shards × 2, `--lost-after-secs 5`. One writer publishes batches of ten 256-byte
//! messages to the shards in turn (through a live holder) and reads a page back every
//! tenth batch; every 20 s one of sites 1-3 is killed and, 10 s later, restarted. Each
//! site's anonymous RSS (`RssAnon` in `/proc/PID/status`: heap and stacks, not LMDB's
//! file-backed memory map, which grows with the data) is sampled every 2 s. Duration: `CAIRN_BENCH_SOAK_SECS`
//! (default 300).
//!
//! Figures: the RSS of site 0 (never killed) at the end against its RSS once warmed up
//! (the first sample after a fifth of the run) — ratio baseline / ours, aim ≥ 0.5 (it
//! must not double); and every acknowledged write found on a live replica at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_gossip::ClusterView;
use cairn_inventory::DbName;
use cairn_tests::{Client, SiteProc, SiteSpec, loopback_addrs, new_cluster_dir};
use serde_json::json;

use crate::gossip_procs::status_mib;
use crate::report::{Measurement, Reporter};

const SITES: usize = 4;
const SHARDS: u32 = 8;
const DB: &str = "soak";

pub(crate) fn run(reporter: &Reporter) -> anyhow::Result<()> {
    let secs: u64 = match std::env::var("CAIRN_BENCH_SOAK_SECS") {
        Ok(v) => v.parse().context("CAIRN_BENCH_SOAK_SECS must be a number of seconds")?,
        Err(_) => 300,
    };
    let bin = crate::failure::cairn_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(soak(&bin, Duration::from_secs(secs)))?;
    let warm = outcome.rss_site0[outcome.rss_site0.len() / 5];
    let last = *outcome.rss_site0.last().context("no RSS sample")?;
    println!(
        "soak: {} writes acknowledged, {} kills; site 0 RSS {:.1} → {:.1} MiB",
        outcome.acknowledged, outcome.kills, warm, last
    );
    reporter.record(&Measurement {
        scenario: "soak",
        name: "anonymous RSS of a site under load with kills, end vs warmed up".into(),
        unit: "MiB",
        ours: last,
        baseline_name: "its RSS after a fifth of the run".into(),
        baseline: warm,
        ratio: warm / last,
        aim: Some(0.5),
        params: json!({ "seconds": secs, "sites": SITES, "shards": SHARDS, "kill_every_s": 20,
            "acknowledged_writes": outcome.acknowledged, "kills": outcome.kills,
            "max_rss_mib_per_site": outcome.max_rss }),
        runs: json!({ "rss_site0_mib": outcome.rss_site0 }),
    })
}

struct Outcome {
    acknowledged: usize,
    kills: usize,
    rss_site0: Vec<f64>,
    max_rss: Vec<f64>,
}

async fn soak(bin: &std::path::Path, duration: Duration) -> anyhow::Result<Outcome> {
    let root = tempfile::tempdir()?;
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(SITES);
    let mut sites: Vec<SiteProc> = (0..SITES)
        .map(|i| {
            let mut spec = SiteSpec::new(bin, root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            spec.extra = vec!["--lost-after-secs".into(), "5".into()];
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    let start = Instant::now();
    client.create_db(addrs[0], DB, SHARDS, 2).await;
    loop {
        if let Ok(view) = client.view(addrs[0]).await
            && placed(&view)
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the db was not placed within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut acked: BTreeMap<u32, usize> = BTreeMap::new();
    let (mut rss_site0, mut max_rss) = (Vec::new(), vec![0.0f64; SITES]);
    let (mut kills, mut down): (usize, Option<(usize, Instant)>) = (0, None);
    let (mut next_kill, mut next_sample) = (Instant::now() + Duration::from_secs(20), Instant::now());
    let began = Instant::now();
    let mut batch = 0u64;
    let mut view = client.view(addrs[0]).await.map_err(anyhow::Error::msg)?;
    while began.elapsed() < duration {
        let now = Instant::now();
        if now >= next_sample {
            for (i, site) in sites.iter().enumerate() {
                if let Some(rss) = site.pid().and_then(|pid| status_mib(pid, "RssAnon")) {
                    max_rss[i] = max_rss[i].max(rss);
                    if i == 0 {
                        rss_site0.push(rss);
                    }
                }
            }
            next_sample = now + Duration::from_secs(2);
        }
        if let Some((i, since)) = down
            && now.duration_since(since) >= Duration::from_secs(10)
        {
            sites[i].restart();
            down = None;
        }
        if down.is_none() && now >= next_kill {
            let i = 1 + kills % (SITES - 1);
            sites[i].kill();
            kills += 1;
            down = Some((i, now));
            next_kill = now + Duration::from_secs(20);
        }
        // One batch to the next shard, through a live holder (the view is refreshed
        // when a holder does not answer).
        let shard = (batch % u64::from(SHARDS)) as u32;
        batch += 1;
        let messages: Vec<Vec<u8>> =
            (0..10).map(|i| format!("{batch}-{i}-{}", "s".repeat(240)).into_bytes()).collect();
        let holder = holder(&view, shard);
        match holder {
            Some(at) => match client.publish(at, DB, shard, &messages).await {
                Ok(ids) => *acked.entry(shard).or_default() += ids.len(),
                Err(_) => view = client.view(addrs[0]).await.unwrap_or(view),
            },
            None => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                view = client.view(addrs[0]).await.unwrap_or(view);
            }
        }
        if batch.is_multiple_of(10)
            && let Some(at) = holder
        {
            let _ = client.read_all(at, DB, shard).await;
        }
    }
    if let Some((i, _)) = down {
        sites[i].restart();
    }
    // Every acknowledged write is on a live replica once the cluster settles.
    let settle = Instant::now();
    loop {
        let view = client.view(addrs[0]).await.map_err(anyhow::Error::msg)?;
        let mut all = placed(&view);
        for (shard, n) in &acked {
            if !all {
                break;
            }
            let Some(at) = holder(&view, *shard) else {
                all = false;
                break;
            };
            all &= client.read_all(at, DB, *shard).await.map(|e| e.len() >= *n).unwrap_or(false);
        }
        if all {
            break;
        }
        if settle.elapsed() > Duration::from_secs(120) {
            bail!("acknowledged writes missing 120 s after the soak ended");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client.close().await;
    Ok(Outcome { acknowledged: acked.values().sum(), kills, rss_site0, max_rss })
}

/// Every shard has two ready replicas on live sites.
fn placed(view: &ClusterView) -> bool {
    view.db(&DbName::new(DB).expect("name")).is_some_and(|d| {
        d.placement
            .iter()
            .all(|s| s.replicas.iter().filter(|r| r.is_ready() && view.is_live(r.site_id)).count() >= 2)
    })
}

/// A live site holding a ready replica of `shard`.
fn holder(view: &ClusterView, shard: u32) -> Option<SocketAddr> {
    let db = view.db(&DbName::new(DB).expect("name"))?;
    let r = db
        .placement
        .get(shard as usize)?
        .replicas
        .iter()
        .find(|r| r.is_ready() && view.is_live(r.site_id))?;
    view.site(r.site_id)?.addr.parse().ok()
}
