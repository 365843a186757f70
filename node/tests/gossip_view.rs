//! Gossip between real sites: in one process (2,000 replicas over QUIC) and as five
//! separate processes (changes, SIGKILL, restart, a foreign cluster kept out).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_gossip::{ClusterView, GossipConfig};
use cairn_inventory::Role;
use cairn_inventory::{DbName, DbRecord, DbSettings, Hlc, ReplicaState, Retention};
use cairn_node::site::{Site, SiteOptions};
use cairn_tests::free_port;
use cairn_transport::Response;
use cairn_transport::tls;

fn fast_gossip(seeds: Vec<String>) -> GossipConfig {
    GossipConfig { interval: Duration::from_millis(100), seeds, ..GossipConfig::default() }
}

/// A fresh cluster dir under `root`.
fn new_cluster(root: &Path) -> std::path::PathBuf {
    let cluster = root.join("cluster");
    tls::init_cluster_dir(&cluster).unwrap();
    cluster
}

/// A site in this process, on an ephemeral loopback port, gossiping every 100 ms.
async fn start_site(root: &Path, name: &str, cluster: &Path, seed: Option<&Site>) -> Site {
    let mut options = {
        let data_dir = root.join(name);
        cairn_node::credentials::issue_site_from_dir(cluster, &data_dir, Role::Core).unwrap();
        SiteOptions::new(data_dir, "127.0.0.1:0".parse().unwrap())
    };
    options.gossip = fast_gossip(seed.map(|s| s.endpoint.local_addr().to_string()).into_iter().collect());
    Site::start(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_2000_replicas_gossips_them_all() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster(root.path());
    let a = start_site(root.path(), "a", &cluster, None).await;
    let name = DbName::new("wide").unwrap();
    let me = a.inventory.identity().site_id;
    a.inventory
        .put_db(&cairn_tests::sealed(
            &cluster,
            DbRecord::new(
                name.clone(),
                DbSettings::new(2000, 1, Retention::default()).expect("settings in range"),
                Hlc { wall_ms: cairn_inventory::now_ms(), logical: 0 },
                me,
            ),
        ))
        .unwrap();
    for shard in 0..2000 {
        a.inventory.set_replica(&name, shard, ReplicaState::Ready).unwrap();
    }
    let b = start_site(root.path(), "b", &cluster, Some(&a)).await;
    let start = Instant::now();
    loop {
        let view = b.view();
        let held = view.site(me).map_or(0, |s| s.replicas);
        let placed =
            view.db(&name).map_or(0, |d| d.placement.iter().filter(|s| !s.replicas.is_empty()).count());
        if held == 2000 && placed == 2000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "after 60 s b sees {held} replicas, {placed} placed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("2,000 replicas reached the other site in {:?}", start.elapsed());
    // Chitchat's packets stayed within its limit: the carriage refuses larger ones.
    assert_eq!(b.endpoint.stats().request_errors, 0);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_creating_one_db_with_different_settings_agree_on_one() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster(root.path());
    let a = start_site(root.path(), "a", &cluster, None).await;
    let b = start_site(root.path(), "b", &cluster, Some(&a)).await;
    let name = DbName::new("dup").unwrap();
    let create = |shards| cairn_transport::operator::DbChange::Create {
        name: name.clone(),
        settings: DbSettings::new(shards, 1, Retention::default()).expect("settings in range"),
    };
    // Both at the same moment, each through a different site, before either hears of the other's.
    let (four, eight) = (create(4), create(8));
    let credentials = tls::Credentials::load(&root.path().join("cluster-operator")).unwrap();
    let signer = credentials.signer().unwrap();
    let operator = |at: &Site| {
        cairn_transport::Endpoint::client(&credentials, Default::default(), at.endpoint.local_addr()).unwrap()
    };
    let (oa, ob) = (operator(&a), operator(&b));
    let (ra, rb) = tokio::join!(
        cairn_transport::operator::change_db(&oa, b.endpoint.local_addr(), &signer, &four),
        cairn_transport::operator::change_db(&ob, a.endpoint.local_addr(), &signer, &eight),
    );
    assert!(matches!(ra.unwrap(), Response::DbCreated { created: true }));
    assert!(matches!(rb.unwrap(), Response::DbCreated { created: true }));
    let start = Instant::now();
    let (va, vb) = loop {
        let (va, vb) = (a.view(), b.view());
        let conflicts = |v: &ClusterView| {
            v.warnings
                .iter()
                .filter(|w| matches!(w, cairn_gossip::view::Warning::ConflictingDb { .. }))
                .count()
        };
        if va.db(&name).is_some()
            && va.db(&name) == vb.db(&name)
            && conflicts(&va) == 1
            && conflicts(&vb) == 1
        {
            break (va, vb);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the two views did not agree on one db");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The winner is the earlier creation by HLC (then the lower site id), the same on both.
    let winner = va.db(&name).unwrap();
    let records = [a.inventory.db(&name).unwrap().unwrap(), b.inventory.db(&name).unwrap().unwrap()];
    let first = records.iter().min_by_key(|r| (r.created, r.origin)).unwrap();
    assert_eq!(
        (winner.shards(), winner.origin, winner.created),
        (first.shards(), first.origin, first.created)
    );
    assert_eq!(vb.db(&name).unwrap().shards(), winner.shards());
    b.shutdown().await;
    a.shutdown().await;
}

/// A `cairn start` child process.
struct Proc {
    child: Child,
    site_id: String,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, cluster: &Path, port: u16, seed: Option<u16>) -> Proc {
    cairn_tests::issue_site_cert(Path::new(env!("CARGO_BIN_EXE_cairn")), cluster, data, false);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["start", "--listen", &format!("127.0.0.1:{port}"), "--gossip-interval-ms", "100"])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(seed) = seed {
        cmd.args(["--seed", &format!("127.0.0.1:{seed}")]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    let site_id = banner.split_whitespace().nth(1).expect("a banner").to_owned();
    Proc { child, site_id, port }
}

fn dump(port: u16, cluster: &Path) -> Option<ClusterView> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dump", "--format", "json", "--timeout", "3", "--node", &format!("127.0.0.1:{port}")])
        .arg("--credentials")
        .arg(cairn_tests::operator_dir(cluster))
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn wait_views(
    what: &str,
    limit: Duration,
    ports: &[u16],
    cluster: &Path,
    ok: impl Fn(&ClusterView) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if ports.iter().all(|p| dump(*p, cluster).is_some_and(|v| ok(&v))) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state_of(view: &ClusterView, site: &str) -> Option<String> {
    view.sites.iter().find(|s| s.site_id.to_string() == site).map(|s| format!("{:?}", s.state).to_lowercase())
}

#[test]
fn five_processes_share_one_view_through_kills_and_restarts() {
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster(root.path());
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut procs: Vec<Proc> = (0..5)
        .map(|i| spawn(&root.path().join(format!("s{i}")), &cluster, ports[i], (i > 0).then_some(ports[0])))
        .collect();
    let ids: Vec<String> = procs.iter().map(|p| p.site_id.clone()).collect();

    let took = wait_views("five live sites everywhere", Duration::from_secs(30), &ports, &cluster, |v| {
        ids.iter().all(|id| state_of(v, id).as_deref() == Some("live"))
    });
    eprintln!("5 processes: all live in every view after {took:?}");

    // A change on one site reaches every view.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "ctl",
            "--node",
            &format!("127.0.0.1:{}", ports[3]),
            "db",
            "create",
            "events",
            "--shards",
            "8",
        ])
        .arg("--credentials")
        .arg(cairn_tests::operator_dir(&cluster))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = DbName::new("events").unwrap();
    let took = wait_views("the new db everywhere", Duration::from_secs(20), &ports, &cluster, |v| {
        v.db(&events).is_some_and(|d| d.shards() == 8 && d.origin.to_string() == ids[3])
    });
    eprintln!("5 processes: a db created on one site in every view after {took:?}");

    // SIGKILL: dead in every other view within the failure detector's bound.
    let victim = procs.remove(2);
    let (victim_id, victim_port) = (victim.site_id.clone(), victim.port);
    drop(victim); // kill -9
    let others: Vec<u16> = ports.iter().copied().filter(|p| *p != victim_port).collect();
    let took =
        wait_views("the killed site dead everywhere", Duration::from_secs(30), &others, &cluster, |v| {
            state_of(v, &victim_id).as_deref() == Some("dead")
        });
    eprintln!("5 processes: SIGKILLed site dead in every view after {took:?}");

    // Restarted on the same data dir: same site id, a new generation, live everywhere.
    let old_generation = dump(ports[0], &cluster)
        .unwrap()
        .sites
        .iter()
        .find(|s| s.site_id.to_string() == victim_id)
        .unwrap()
        .generation;
    let back = spawn(&root.path().join("s2"), &cluster, victim_port, Some(ports[0]));
    assert_eq!(back.site_id, victim_id);
    let took =
        wait_views("the restarted site live everywhere", Duration::from_secs(30), &ports, &cluster, |v| {
            v.sites.iter().any(|s| {
                s.site_id.to_string() == victim_id
                    && s.state == cairn_gossip::SiteState::Live
                    && s.generation > old_generation
            })
        });
    eprintln!("5 processes: restarted site live again in every view after {took:?}");
    procs.push(back);

    // A site of another cluster, seeded at us, joins nobody's view and sees nobody.
    let other = root.path().join("other-cluster");
    tls::init_cluster_dir(&other).unwrap();
    let intruder_port = free_port();
    let intruder = spawn(&root.path().join("intruder"), &other, intruder_port, Some(ports[0]));
    std::thread::sleep(Duration::from_secs(2));
    for port in &ports {
        let view = dump(*port, &cluster).unwrap();
        assert_eq!(view.sites.len(), 5, "site on port {port} lists {} sites", view.sites.len());
        assert!(state_of(&view, &intruder.site_id).is_none());
    }
    let theirs = dump(intruder_port, &other).unwrap();
    assert_eq!(theirs.sites.len(), 1, "the intruder learned of {} sites", theirs.sites.len());

    // The table for people lists every site.
    let table = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dump", "--node", &format!("127.0.0.1:{}", ports[4])])
        .arg("--credentials")
        .arg(cairn_tests::operator_dir(&cluster))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("SITES (5)") && text.contains("events"), "{text}");

    // A site stopped with SIGTERM says goodbye: `left`, not `dead`.
    let leaving = procs.remove(1);
    let leaving_id = leaving.site_id.clone();
    let status = Command::new("kill").args(["-TERM", &leaving.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let remaining: Vec<u16> = procs.iter().map(|p| p.port).collect();
    let took =
        wait_views("the stopped site left everywhere", Duration::from_secs(30), &remaining, &cluster, |v| {
            state_of(v, &leaving_id).as_deref() == Some("left")
        });
    eprintln!("5 processes: a site stopped with SIGTERM is `left` in every view after {took:?}");
    drop(leaving);
}
