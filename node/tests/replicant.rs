//! Replicant sites, end to end with real processes: 3 core sites and 1 replicant
//! (`--role replicant --follow`). The replicant holds a read-only copy of every shard
//! of the dbs it follows — also of a db created after it started — and serves reads
//! from it; its writes are forwarded to core sites and answered as if local; after
//! writes through both it and the core sites, its reads equal the core replicas'
//! content. It is never placed, counted or planned for: killing it changes no plan.
//! A site holding replicas refuses to start as a replicant, and `--follow` without
//! `--role replicant` is a usage error.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, EntryId, SiteId};
use cairn_tests::hosted::{check_replicas, settled};
use cairn_tests::{
    Client, SiteProc, SiteSpec, digest, loopback_addrs, new_cluster_dir, sorted, wait_for, wait_live_sites,
};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// Every shard of `db` in `view` has a caught-up copy on `replicant` lacking nothing.
fn followed(view: &ClusterView, db: &str, replicant: SiteId) -> bool {
    view.db(&DbName::new(db).unwrap()).is_some_and(|d| {
        d.placement.iter().all(|s| {
            s.followers.iter().any(|f| f.site_id == replicant && f.caught_up && f.lag_entries == Some(0))
        })
    })
}

/// Writes `n` messages to every shard of `db`, each through `via(shard)`; adds the ids
/// to `acked`.
async fn write_each_shard(
    client: &Client,
    view: &ClusterView,
    db: &str,
    n: usize,
    via: impl Fn(u32) -> SocketAddr,
    acked: &mut BTreeMap<u32, BTreeSet<EntryId>>,
) {
    for shard in 0..view.db(&DbName::new(db).unwrap()).unwrap().shards() {
        let messages: Vec<Vec<u8>> =
            (0..n).map(|i| format!("{db}-{shard}-{i}-{}", acked.len()).into_bytes()).collect();
        let ids = client.publish(via(shard), db, shard, &messages).await.unwrap();
        assert_eq!(ids.len(), n);
        acked.entry(shard).or_default().extend(ids);
    }
}

/// The replicant's reads of every shard of `db` equal the core replicas' content, and
/// hold every acknowledged write. Answers the entries compared, or what differs.
async fn reads_equal(
    client: &Client,
    view: &ClusterView,
    db: &str,
    replicant: SocketAddr,
    acked: &BTreeMap<u32, BTreeSet<EntryId>>,
) -> Result<usize, String> {
    check_replicas(client, view, db, acked).await?;
    let mut compared = 0;
    for shard in &view.db(&DbName::new(db).unwrap()).unwrap().placement {
        let core_at: SocketAddr = view.site(shard.replicas[0].site_id).unwrap().addr.parse().unwrap();
        let (core, _) = sorted(client.read_all(core_at, db, shard.shard).await?);
        let (copy, dup) = sorted(client.read_all(replicant, db, shard.shard).await?);
        if dup || digest(&core) != digest(&copy) {
            return Err(format!(
                "shard {}: {} entries on the replicant, {} on a core replica",
                shard.shard,
                copy.len(),
                core.len()
            ));
        }
        compared += copy.len();
    }
    Ok(compared)
}

/// Waits (up to a minute) until `at`'s view shows `replicant` caught up on `db` with no
/// lag and its reads equal the core replicas'.
async fn caught_up_and_equal(
    client: &Client,
    at: SocketAddr,
    db: &str,
    (replicant, replicant_at): (SiteId, SocketAddr),
    acked: &BTreeMap<u32, BTreeSet<EntryId>>,
    what: &str,
) {
    wait_for(what, Duration::from_secs(60), async || {
        let v = client.view(at).await.ok()?;
        if !followed(&v, db, replicant) {
            return None;
        }
        reads_equal(client, &v, db, replicant_at, acked).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicant_reads_locally_forwards_writes_and_changes_no_plan() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(4);
    // Core sites recover a dead site's shards after 2 s: were the replicant counted, its
    // death would set plans going.
    let core_flags = ["--lost-after-secs", "2"].map(String::from).to_vec();
    let mut sites: Vec<SiteProc> = (0..3)
        .map(|i| {
            let mut spec =
                SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, addrs[i], &addrs[..1]);
            spec.extra = core_flags.clone();
            SiteProc::start(&spec)
        })
        .collect();
    let client = Client::new(&cluster, addrs[0]);
    let limit = Duration::from_secs(60);
    wait_live_sites(&client, addrs[0], 3, limit).await;
    client.create_db(addrs[0], "events", 4, 2).await;
    let view = wait_for("events placed", limit, async || {
        let view = client.view(addrs[0]).await.ok()?;
        settled(&view, "events", 2).then_some(view)
    })
    .await;
    let holder = |view: &ClusterView, db: &str, shard: u32| -> SocketAddr {
        let d = view.db(&DbName::new(db).unwrap()).unwrap();
        view.site(d.placement[shard as usize].replicas[0].site_id).unwrap().addr.parse().unwrap()
    };
    let mut acked = BTreeMap::new();
    write_each_shard(&client, &view, "events", 200, |s| holder(&view, "events", s), &mut acked).await;

    // The replicant: follows events (there already) and later (not yet created).
    let mut spec = SiteSpec::new(bin(), root.path(), "replicant", &cluster, addrs[3], &addrs[..1]);
    spec.extra = ["--role", "replicant", "--follow", "events,later"].map(String::from).to_vec();
    let started = Instant::now();
    let mut replicant = SiteProc::start(&spec);
    let rid: SiteId = replicant.site_id.parse().unwrap();
    let r_at = addrs[3];
    wait_live_sites(&client, addrs[0], 4, limit).await;
    wait_for("events followed by the replicant", limit, async || {
        followed(&client.view(addrs[0]).await.ok()?, "events", rid).then_some(())
    })
    .await;
    println!(
        "replicant started and caught up on events (4 shards, 800 entries) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Reads are local: a copy answers without sending the client elsewhere.
    let local = client.read_all(r_at, "events", 0).await.unwrap();
    assert_eq!(local.len(), 200);

    // Writes through the replicant land on core sites (their ids name a core origin),
    // answered as if local; writes through core sites too.
    let mut through_replicant = BTreeMap::new();
    write_each_shard(&client, &view, "events", 50, |_| r_at, &mut through_replicant).await;
    for ids in through_replicant.values() {
        assert!(ids.iter().all(|id| id.origin != rid), "a write stored on the replicant");
    }
    for (shard, ids) in through_replicant {
        acked.entry(shard).or_default().extend(ids);
    }
    write_each_shard(&client, &view, "events", 50, |s| holder(&view, "events", s), &mut acked).await;
    let compared = wait_for("the replicant's reads equal the core replicas'", limit, async || {
        reads_equal(&client, &view, "events", r_at, &acked).await.ok()
    })
    .await;
    assert_eq!(compared, 4 * 300);

    // The replicant is in every view, holding copies, never replicas.
    let view = client.view(addrs[1]).await.unwrap();
    let site = view.site(rid).unwrap();
    assert_eq!((site.role.to_string().as_str(), site.replicas, site.following), ("replicant", 0, 4));
    for d in &view.dbs {
        assert!(d.placement.iter().all(|s| s.replicas.iter().all(|r| r.site_id != rid)));
    }

    // A db created after the replicant started, through the replicant itself.
    client.create_db(r_at, "later", 2, 3).await;
    let view = wait_for("later placed", limit, async || {
        let view = client.view(addrs[0]).await.ok()?;
        settled(&view, "later", 3).then_some(view)
    })
    .await;
    let mut later = BTreeMap::new();
    write_each_shard(&client, &view, "later", 100, |s| holder(&view, "later", s), &mut later).await;
    write_each_shard(&client, &view, "later", 20, |_| r_at, &mut later).await;
    caught_up_and_equal(&client, addrs[0], "later", (rid, r_at), &later, "later followed and equal").await;

    // `cairn dump` (for people) says what it follows and how far behind it is.
    // (Frontiers arrive by gossip round by round: the lag may show a moment behind.)
    let line = format!("replicant {}: following 2 of 2 shards (2 caught up), lag 0 entries", rid.short());
    let asked = Instant::now();
    loop {
        let out = Command::new(bin())
            .args(["dump", "--node", &addrs[0].to_string(), "--credentials"])
            .arg(cairn_tests::operator_dir(&cluster))
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if table.contains(&line) {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "{table}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The replicant dies: no plan, no warning, placement unchanged — for longer than
    // core sites wait before recovering a dead site's shards.
    let placement = |v: &ClusterView| -> Vec<(DbName, u32, Vec<SiteId>)> {
        v.dbs
            .iter()
            .flat_map(|d| {
                d.placement
                    .iter()
                    .map(|s| (d.name.clone(), s.shard, s.replicas.iter().map(|r| r.site_id).collect()))
            })
            .collect()
    };
    let before = placement(&client.view(addrs[0]).await.unwrap());
    replicant.kill();
    wait_for("the replicant dead everywhere", limit, async || {
        for at in &addrs[..3] {
            let v = client.view(*at).await.ok()?;
            if v.site(rid)?.state != cairn_gossip::SiteState::Dead {
                return None;
            }
        }
        Some(())
    })
    .await;
    let watch_until = Instant::now() + Duration::from_secs(5);
    let mut samples = 0;
    while Instant::now() < watch_until {
        for at in &addrs[..3] {
            let v = client.view(*at).await.unwrap();
            assert!(v.plans.is_empty(), "a plan after the replicant died: {:?}", v.plans);
            assert!(v.warnings.is_empty(), "a warning after the replicant died: {:?}", v.warnings);
            assert_eq!(placement(&v), before);
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("replicant dead: {samples} views sampled over 5 s, no plan, no warning, placement unchanged");

    // It comes back and catches up what it missed, from its frontier.
    write_each_shard(&client, &view, "later", 30, |s| holder(&view, "later", s), &mut later).await;
    replicant.restart();
    caught_up_and_equal(
        &client,
        addrs[0],
        "later",
        (rid, r_at),
        &later,
        "the restarted replicant catches up",
    )
    .await;
    replicant.kill();

    // A core site holding replicas cannot restart as a replicant: not with its core
    // site's certificate, and not with a replicant's either.
    sites[2].kill();
    let as_replicant = [
        "start",
        "--data-dir",
        &sites[2].data_dir.display().to_string(),
        "--listen",
        &addrs[2].to_string(),
        "--role",
        "replicant",
    ];
    let out = run_briefly(&as_replicant);
    assert!(out.0 != 0 && out.1.contains("the certificate names site/"), "{out:?}");
    cairn_tests::issue_site_cert(bin(), &cluster, &sites[2].data_dir, true);
    let out = run_briefly(&[
        "start",
        "--data-dir",
        &sites[2].data_dir.display().to_string(),
        "--listen",
        &addrs[2].to_string(),
        "--role",
        "replicant",
    ]);
    assert!(out.0 != 0 && out.1.contains("a replicant holds none"), "{out:?}");
    // --follow is for replicants.
    let out = run_briefly(&["start", "--data-dir", "/nonexistent", "--follow", "events"]);
    assert!(out.0 == 2 && out.1.contains("--role replicant"), "{out:?}");
}

/// Runs `cairn ARGS` that should exit at once: its exit code and stderr. Killed after
/// 20 s (a start that wrongly succeeds).
fn run_briefly(args: &[&str]) -> (i32, String) {
    let mut child =
        Command::new(bin()).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}
