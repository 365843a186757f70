//! The real `cairn` binary, driven as a user would.

use std::process::{Command, Output};

use cairn_inventory::{
    ClusterId, DbName, DbRecord, DbSettings, Hlc, Inventory, InventoryConfig, Retention, SiteId,
};

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn version_shows_the_store_format() {
    let out = cairn(&["--version"]);
    assert!(out.status.success());
    let expected = format!("store format {}", cairn_inventory::STORE_FORMAT);
    assert!(text(&out).contains(&expected), "{}", text(&out));
}

#[test]
fn init_show_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("site");
    let data = data.to_str().unwrap();
    let cluster = "000000000000000000000000000000c1";
    let out = cairn(&["inventory", "init", "--data-dir", data, "--cluster-id", cluster]);
    assert!(out.status.success(), "{}", text(&out));
    let site = text(&out).lines().next().unwrap().split_whitespace().nth(1).unwrap().to_owned();

    // Put something in, as a running site would.
    {
        let inv = Inventory::open(data, ClusterId(0xc1), InventoryConfig::default()).unwrap();
        let name = DbName::new("messages").unwrap();
        let record = DbRecord {
            seal: None,
            name: name.clone(),
            settings: DbSettings::new(4, 2, Retention::default()).expect("settings in range"),
            created: Hlc { wall_ms: 1, logical: 0 },
            origin: SiteId(1),
            changed: Hlc { wall_ms: 1, logical: 0 },
            dropped: false,
            supersedes: None,
        };
        inv.put_db(&record).unwrap();
        inv.set_replica(&name, 2, cairn_inventory::ReplicaState::Ready).unwrap();
        inv.append(&name, 2, &["a", "b", "c"]).unwrap();
    }

    let out = cairn(&["inventory", "show", "--data-dir", data, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["site_id"], site);
    assert_eq!(json["cluster_id"], cluster);
    assert_eq!(json["dbs"][0]["name"], "messages");
    assert_eq!(json["replicas"][0]["shard"], 2);
    assert_eq!(json["replicas"][0]["state"], "ready");
    assert_eq!(json["replicas"][0]["entries"], 3);

    let out = cairn(&["inventory", "verify", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 corrupt"));

    // Another cluster's id is refused with the reason.
    let out = cairn(&["inventory", "init", "--data-dir", data, "--cluster-id", &"f".repeat(32)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("belongs to cluster"), "{}", text(&out));
}

#[test]
fn a_data_dir_in_use_is_refused_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Inventory::open(dir.path(), ClusterId(1), InventoryConfig::default()).unwrap();
    let out = cairn(&["inventory", "show", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("in use by another cairn process"), "{}", text(&out));
}

#[test]
fn usage_errors_exit_2_and_bad_values_name_themselves() {
    let out = cairn(&["inventory", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cairn(&["inventory", "init", "--data-dir", "/tmp/never", "--cluster-id", "xyz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cluster id"), "{}", text(&out));
    let out = cairn(&["inventory", "show", "--data-dir", "/nonexistent/cairn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no cairn inventory"), "{}", text(&out));
}

fn cairn_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args);
    for key in [
        "CAIRN_DATA_DIR",
        "CAIRN_LISTEN",
        "CAIRN_CLUSTER_DIR",
        "CAIRN_CREDENTIALS",
        "CAIRN_ROLE",
        "CAIRN_SEEDS",
        "CAIRN_ZONE",
        "CAIRN_CAPACITY",
        "CAIRN_GOSSIP_INTERVAL_MS",
        "CAIRN_CONFIG",
        "CAIRN_METRICS_LISTEN",
        "CAIRN_WORKER_THREADS",
    ] {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn settings_come_from_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\nlisten = \"10.0.0.1:1\"\ncapacity = 5\nzone = \"file-zone\"\n\
         metrics_listen = \"127.0.0.1:9200\"\n[gossip]\ninterval_ms = 300\n",
    )
    .unwrap();
    let out = cairn_env(
        &["start", "--print-config", "--config", file.to_str().unwrap(), "--capacity", "9"],
        &[
            ("CAIRN_LISTEN", "127.0.0.1:9000"),
            ("CAIRN_CAPACITY", "7"),
            ("CAIRN_METRICS_LISTEN", "127.0.0.1:9300"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let merged: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(merged["capacity"].as_integer(), Some(9), "flag over env and file");
    assert_eq!(merged["listen"].as_str(), Some("127.0.0.1:9000"), "env over file");
    assert_eq!(merged["zone"].as_str(), Some("file-zone"), "file over default");
    assert_eq!(merged["data_dir"].as_str(), Some("/from/file"));
    assert_eq!(merged["metrics_listen"].as_str(), Some("127.0.0.1:9300"), "env over file");
    assert_eq!(merged["gossip"]["interval_ms"].as_integer(), Some(300));
    assert_eq!(merged["role"].as_str(), Some("core"), "default");
    assert_eq!(merged["transport"]["request_timeout_ms"].as_integer(), Some(10_000), "default");
    let half_the_cores = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    assert_eq!(merged["worker_threads"].as_integer(), Some(half_the_cores as i64), "default");
}

#[test]
fn a_site_runs_as_many_async_workers_as_it_is_told() {
    let root = tempfile::tempdir().unwrap();
    let cluster = cairn_tests::new_cluster_dir(root.path());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cairn"));
    let addr = cairn_tests::loopback_addrs(1)[0];
    let mut spec = cairn_tests::SiteSpec::new(bin, root.path(), "w", &cluster, addr, &[]);
    spec.extra = vec!["--worker-threads".into(), "3".into()];
    let site = cairn_tests::SiteProc::start(&spec);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The site's start line says how many workers its runtime has.
    while !site.stderr().contains("async_workers=3") {
        assert!(std::time::Instant::now() < deadline, "no start line with 3 workers:\n{}", site.stderr());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn bad_settings_name_themselves_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "lissen = \"127.0.0.1:1\"\n").unwrap();
    let out = cairn_env(&["start", "--data-dir", data, "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("lissen"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--gossip-interval-ms", "5"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("interval") && text(&out).contains("10 ms"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--capacity", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("capacity"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--worker-threads", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("worker_threads"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--listen", "nowhere"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--listen"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--metrics-listen", "port9"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--metrics-listen"), "{}", text(&out));

    let out = cairn_env(&["start"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("data dir"), "{}", text(&out));

    let out = cairn_env(&["start", "--data-dir", data, "--role", "boss"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("core or replicant"), "{}", text(&out));
}

/// A small view as `cairn dump --format json` prints it: two live sites, db `d` of 4
/// shards × 2 on both.
fn dump_json() -> String {
    use cairn_gossip::summary::{
        DbSummary, Label, ReplicaPhase, ReplicaSummary, SiteSummary, SummaryKey, encode_value,
    };
    use cairn_gossip::view::{NodeInput, ViewContext, build_view};
    let nodes: Vec<NodeInput> = (1..=2u8)
        .map(|n| {
            let site = SiteSummary {
                drain: None,
                role: cairn_inventory::Role::Core,
                addr: Label::truncated(&format!("127.0.0.1:{}", 7000 + u16::from(n))),
                version: Label::truncated("t"),
                started_ms: 0,
                zone: None,
                capacity: 100,
                leaving: false,
                draining: false,
                certificate_expires_ms: 0,
            };
            let at = Hlc { wall_ms: 5, logical: 0 };
            let db = DbSummary {
                seal: None,
                settings: DbSettings::new(4, 2, Retention::default()).unwrap(),
                created: at,
                origin: SiteId(1),
                changed: at,
                dropped: false,
                supersedes: None,
            };
            let name = DbName::new("d").unwrap();
            let mut kv = vec![
                (SummaryKey::Site.render(), encode_value(&site)),
                (SummaryKey::Db(name.clone()).render(), encode_value(&db)),
            ];
            for shard in 0..4 {
                let r = ReplicaSummary {
                    phase: ReplicaPhase::Ready,
                    entries: 1,
                    bytes: 1,
                    frontier_digest: 0,
                    frontier: cairn_inventory::Frontier::default(),
                    progress: None,
                };
                kv.push((SummaryKey::Replica(name.clone(), shard).render(), encode_value(&r)));
            }
            NodeInput {
                site_id: SiteId(u128::from(n) << 96),
                generation: 1,
                gossip_addr: format!("127.0.0.1:{}", 7000 + u16::from(n)).parse().unwrap(),
                live: true,
                last_seen_ms: None,
                key_values: kv,
                forged: Vec::new(),
                unverified: None,
            }
        })
        .collect();
    serde_json::to_string(&build_view(SiteId(1 << 96), &nodes, &ViewContext::at(1_000))).unwrap()
}

#[test]
fn plan_simulate_and_import_refuse_an_edited_dump_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dump_json();
    assert!(good.contains("\"replication\":2") && good.contains("\"shards\":4"), "{good}");
    let cases = [
        (
            "replication 0",
            good.replace("\"replication\":2", "\"replication\":0"),
            "replication: 0 is out of range",
        ),
        (
            "shards u32::MAX",
            good.replace("\"shards\":4", "\"shards\":4294967295"),
            "shards: 4294967295 is out of range",
        ),
        (
            "shards 3 (placement lists 4)",
            good.replace("\"shards\":4", "\"shards\":3"),
            "placement lists 4 shards",
        ),
    ];
    for (what, edited, says) in cases {
        let file = dir.path().join("dump.json");
        std::fs::write(&file, &edited).unwrap();
        let file = file.to_str().unwrap();
        for args in [
            vec!["plan", "simulate", "--dump", file, "repair"],
            vec![
                "import",
                "--data-dir",
                dir.path().join("site").to_str().unwrap(),
                "--from",
                file,
                "--site",
                "00000001000000000000000000000000",
            ],
        ] {
            let out = cairn(&args);
            let said = text(&out);
            assert!(
                matches!(out.status.code(), Some(1 | 2)),
                "{what}: {args:?} exited {:?}: {said}",
                out.status
            );
            assert!(said.contains(says) && !said.contains("panicked"), "{what}: {args:?}: {said}");
        }
    }
    // The good dump still simulates.
    let file = dir.path().join("good.json");
    std::fs::write(&file, &good).unwrap();
    let out = cairn(&["plan", "simulate", "--dump", file.to_str().unwrap(), "repair"]);
    assert!(out.status.success(), "{}", text(&out));
}
