//! The HTTP/JSON gateway against real `cairn start` processes, with HTTP clients no one
//! here wrote: `curl`, and Python's `urllib`/`http.client` (`http_client.py`). Publish
//! and read back; a long poll that returns when a message arrives; an NDJSON
//! subscription that survives the site's restart by resuming from its last cursor; 401
//! without a credential, 403 for an application asking for an operator's route, 400 with
//! a JSON error for a malformed body; tokens and client certificates both accepted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{Client, SiteProc, SiteSpec, free_port, loopback_addrs, new_cluster_dir, wait_for};
use cairn_transport::{Identity, PrincipalName};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http_client.py")
}

/// `curl -sS ARGS URL`: (status, body as JSON).
fn curl(args: &[&str], url: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl; .ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.trim_end().rsplit_once('\n').unwrap_or(("", text.trim()));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn token(cluster: &Path, flag: &str, name: &str) -> String {
    let out = Command::new(bin())
        .args(["cluster", "issue-token", "--cluster-dir"])
        .arg(cluster)
        .args([flag, name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned()
}

fn python_run(args: &[&str]) -> Value {
    let out = Command::new("python3").arg(python()).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_real_http_clients_through_a_restart() {
    let curl_ok = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(curl_ok, "curl is needed (apt-get install curl; .ci/run does)");
    let root = tempfile::tempdir().unwrap();
    let cluster = new_cluster_dir(root.path());
    let addrs = loopback_addrs(2);
    let http_port = free_port();
    let specs: Vec<SiteSpec> = (0..2)
        .map(|i| {
            let mut spec =
                SiteSpec::new(bin(), root.path(), &format!("s{i}"), &cluster, addrs[i], &[addrs[0]]);
            if i == 0 {
                spec.extra = vec!["--http-listen".into(), format!("127.0.0.1:{http_port}")];
            }
            spec
        })
        .collect();
    let mut sites: Vec<SiteProc> = specs.iter().map(SiteProc::start).collect();
    let operator = Client::new(&cluster, addrs[0]);
    cairn_tests::wait_live_sites(&operator, addrs[0], 2, Duration::from_secs(60)).await;
    operator.create_db(addrs[0], "web", 4, 2).await;
    wait_for("web placed", Duration::from_secs(60), async || {
        let view = operator.view(addrs[0]).await.ok()?;
        let d = view.db(&"web".parse().unwrap())?;
        (view.plans.is_empty()
            && d.placement.iter().all(|s| s.replicas.iter().filter(|r| r.is_ready()).count() == 2))
        .then_some(())
    })
    .await;
    let base = format!("https://localhost:{http_port}");
    let ca = cluster.join("ca.pem");
    let ca_arg = ca.to_str().unwrap();
    let app_token = token(&cluster, "--client", "app");
    let ops_token = token(&cluster, "--operator", "ops");
    let app_dir = cairn_tests::issue_credentials(
        &cluster,
        &Identity::Client(PrincipalName::new("app").unwrap()),
        &root.path().join("app"),
    );
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let app_auth = bearer(&app_token);
    let url = |path: &str| format!("{base}{path}");

    // Health needs no credential; the data routes do (401, JSON with a code).
    let (status, body) = curl(&["--cacert", ca_arg], &url("/healthz"));
    assert_eq!((status, &body["status"]), (200, &Value::from("ok")));
    let (status, body) = curl(&["--cacert", ca_arg], &url("/v1/dbs/web/messages"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    // An application (by certificate) may not read the cluster view; an operator may.
    let cert = app_dir.join("cert.pem");
    let key = app_dir.join("key.pem");
    let as_app = ["--cacert", ca_arg, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let (status, body) = curl(&as_app, &url("/v1/cluster"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["code"] == "forbidden"
            && body["error"]["message"].as_str().unwrap().contains("client/app")
    );
    let (status, body) = curl(&["--cacert", ca_arg, "-H", &bearer(&ops_token)], &url("/v1/cluster"));
    assert_eq!(status, 200);
    assert_eq!(body["sites"].as_array().unwrap().len(), 2, "{body}");
    // Malformed bodies and unknown dbs: JSON errors.
    for (body, want) in
        [("nope", 400), (r#"{"topic": "a/+", "payload": "x"}"#, 400), (r#"{"payload": 7}"#, 400)]
    {
        let (status, answer) = curl(
            &["--cacert", ca_arg, "-H", &app_auth, "-X", "POST", "--data-binary", body],
            &url("/v1/dbs/web/messages"),
        );
        assert_eq!(status, want, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    }
    let (status, answer) = curl(
        &["--cacert", ca_arg, "-H", &app_auth, "-X", "POST", "--data-binary", r#"{"payload": "x"}"#],
        &url("/v1/dbs/nothing/messages"),
    );
    assert_eq!((status, &answer["error"]["code"]), (404, &Value::from("not_found")), "{answer}");

    // Publish NDJSON (by certificate) and read it back (by token), with a filter.
    let ndjson = "{\"topic\":\"greet/en\",\"payload\":\"hello\"}\n{\"topic\":\"greet/fr\",\"payload\":\"bonjour\"}\n{\"topic\":\"other\",\"key\":\"k\",\"payload_base64\":\"AP8=\"}\n";
    let mut args = as_app.to_vec();
    args.extend(["-X", "POST", "-H", "Content-Type: application/x-ndjson", "--data-binary", ndjson]);
    let (status, answer) = curl(&args, &url("/v1/dbs/web/messages"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ids"].as_array().unwrap().len(), 3, "{answer}");
    let (status, answer) =
        curl(&["--cacert", ca_arg, "-H", &app_auth], &url("/v1/dbs/web/messages?filter=greet/%2B"));
    assert_eq!(status, 200, "{answer}");
    let payloads: BTreeSet<&str> =
        answer["entries"].as_array().unwrap().iter().map(|e| e["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, BTreeSet::from(["hello", "bonjour"]), "{answer}");
    let (_, all) = curl(&["--cacert", ca_arg, "-H", &app_auth], &url("/v1/dbs/web/messages"));
    let binary = all["entries"].as_array().unwrap().iter().find(|e| e["topic"] == "other").unwrap();
    assert_eq!(binary["payload_base64"], "AP8=", "{binary}");
    let cursor = all["cursor"].as_str().unwrap().to_owned();
    assert!(cursor.starts_with("c1."));

    // A long poll (Python) returns when a message arrives a second later.
    let poller = {
        let (base, token, ca, cursor) = (base.clone(), app_token.clone(), ca_arg.to_owned(), cursor.clone());
        std::thread::spawn(move || python_run(&["longpoll", &base, &token, &ca, &cursor, "20000"]))
    };
    std::thread::sleep(Duration::from_secs(1));
    let published = python_run(&["publish", &base, &app_token, ca_arg, "late/one", "waited for"]);
    assert_eq!(published["status"], 200, "{published}");
    let polled = poller.join().unwrap();
    assert_eq!(polled["status"], 200, "{polled}");
    let entries = polled["answer"]["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["payload"] == "waited for"), "{polled}");
    let took = polled["answer"]["took_s"].as_f64().unwrap();
    assert!((0.5..10.0).contains(&took), "the long poll answered after {took} s");
    eprintln!("long poll answered {took:.2} s after it began (the message came after 1 s)");

    // An NDJSON subscription (Python) from the start, through a SIGKILL and restart of the
    // site serving it: it resumes from its last cursor; every message once.
    const WANT: usize = 4 + 10 + 6;
    let mut subscriber: Child = Command::new("python3")
        .arg(python())
        .args(["subscribe", &base, &app_token, ca_arg, &WANT.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<Value>();
    let stdout = subscriber.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = lines_tx.send(value);
            }
        }
    });
    let mut got: Vec<Value> = Vec::new();
    let take = |got: &mut Vec<Value>, n: usize, limit: Duration| {
        let deadline = Instant::now() + limit;
        while got.iter().filter(|v| v.get("seq").is_some()).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(value) => got.push(value),
                Err(_) => panic!("the subscriber got {:?}", got),
            }
        }
    };
    let batch = |tag: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{tag}-{i}")).collect() };
    let first: Vec<String> = batch("before", 10);
    let mut args = vec!["publish", &base, &app_token, ca_arg, "sub/x"];
    args.extend(first.iter().map(String::as_str));
    assert_eq!(python_run(&args)["status"], 200);
    take(&mut got, 14, Duration::from_secs(30));
    sites[0].kill();
    let down = Instant::now();
    sites[0] = SiteProc::start(&specs[0]);
    wait_for("the gateway back", Duration::from_secs(30), async || {
        let (status, _) = curl(&["--cacert", ca_arg], &url("/healthz"));
        (status == 200).then_some(())
    })
    .await;
    let after = batch("after", 6);
    let published =
        wait_for("a publish through the restarted gateway", Duration::from_secs(30), async || {
            let mut args = vec!["publish", &base, &app_token, ca_arg, "sub/y"];
            args.extend(after.iter().map(String::as_str));
            let answer = python_run(&args);
            (answer["status"] == 200).then_some(answer)
        })
        .await;
    assert_eq!(published["answer"]["ids"].as_array().unwrap().len(), 6);
    take(&mut got, WANT, Duration::from_secs(60));
    let _ = subscriber.wait();
    let entries: Vec<&Value> = got.iter().filter(|v| v.get("seq").is_some()).collect();
    let ids: BTreeSet<(u64, String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["shard"].as_u64().unwrap(),
                e["origin"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids.len(), entries.len(), "an entry came twice: {got:?}");
    let payloads: BTreeSet<&str> = entries.iter().filter_map(|e| e["payload"].as_str()).collect();
    for p in first.iter().chain(&after) {
        assert!(payloads.contains(p.as_str()), "{p} missing: {got:?}");
    }
    let reconnects = got.iter().filter(|v| v.get("reconnect").is_some()).count();
    assert!(reconnects >= 1, "the subscriber never had to resume: {got:?}");
    eprintln!(
        "NDJSON subscription: {} entries, each once, through a SIGKILL and restart of its site ({reconnects} \
         reconnects, back {:?} after the kill)",
        entries.len(),
        down.elapsed()
    );
    drop(sites);
    let _ = addrs.iter().map(SocketAddr::to_string).count();
}
