//! Harness for cluster tests: real `cairn start` processes (on loopback or each in its
//! own network namespace), faults (SIGKILL, restart, network cuts), and a client that
//! talks to sites as the CLI does.
//!
//! Everything a test creates is removed when its handle drops — processes killed,
//! namespaces and the bridge deleted — even when the test fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, DbRecord, DbSettings, Entry, EntryId, Plan, Retention};
use cairn_transport::operator::{DbChange, change_db};
use cairn_transport::{Credentials, Endpoint, Request, Response, Signer, SiteStatus, TransportConfig, tls};

pub mod decoders;
pub mod delay;
pub mod hosted;
pub mod hostile;
pub mod netns;
pub mod streams;

/// A `cairn start` child process. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct SiteProc {
    child: Option<Child>,
    /// Its site id, from its start banner.
    pub site_id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir.
    pub data_dir: PathBuf,
    args: Vec<String>,
    prefix: Vec<String>,
}

/// How to start one site.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// The `cairn` binary.
    pub bin: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its cluster's CA dir: the site's certificate is issued from it into its data dir
    /// before the first start (the site itself never reads the CA key).
    pub cluster_dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Seeds.
    pub seeds: Vec<SocketAddr>,
    /// More flags.
    pub extra: Vec<String>,
    /// A command prefix (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
}

impl SiteSpec {
    /// Site `name` of a test: data dir `root/name`, listening at `addr`, seeded by
    /// `seeds`, no extra flags. With `CAIRN_TEST_SITE_LOGS=DIR` in the environment its
    /// debug log goes to `DIR/<name>.log`, to look into a failing test.
    pub fn new(
        bin: &Path,
        root: &Path,
        name: &str,
        cluster: &Path,
        addr: SocketAddr,
        seeds: &[SocketAddr],
    ) -> Self {
        let prefix = match std::env::var("CAIRN_TEST_SITE_LOGS") {
            Ok(dir) => {
                let redirect = format!("RUST_LOG=cairn_node=debug exec \"$0\" \"$@\" 2>>{dir}/{name}.log");
                ["sh".to_owned(), "-c".to_owned(), redirect].to_vec()
            }
            Err(_) => Vec::new(),
        };
        Self {
            bin: bin.to_owned(),
            data_dir: root.join(name),
            cluster_dir: cluster.to_owned(),
            addr,
            seeds: seeds.to_vec(),
            extra: Vec::new(),
            prefix,
        }
    }
}

impl SiteProc {
    /// Starts a site and waits for its banner.
    pub fn start(spec: &SiteSpec) -> Self {
        let mut args: Vec<String> = vec![
            spec.bin.display().to_string(),
            "start".into(),
            "--listen".into(),
            spec.addr.to_string(),
            "--data-dir".into(),
            spec.data_dir.display().to_string(),
        ];
        // Tests gossip every 100 ms unless the spec's flags say otherwise.
        if !spec.extra.iter().any(|a| a == "--gossip-interval-ms") {
            args.extend(["--gossip-interval-ms".into(), "100".into()]);
        }
        issue_site_certificate(spec);
        for seed in &spec.seeds {
            args.extend(["--seed".into(), seed.to_string()]);
        }
        args.extend(spec.extra.iter().cloned());
        let mut proc = Self {
            child: None,
            site_id: String::new(),
            addr: spec.addr,
            data_dir: spec.data_dir.clone(),
            args,
            prefix: spec.prefix.clone(),
        };
        proc.restart();
        proc
    }

    /// Starts the process again (after [`Self::kill`]) with the same settings.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running site");
        let all: Vec<&String> = self.prefix.iter().chain(&self.args).collect();
        // The site's stderr (warnings and errors) goes next to its data dir, so a site
        // that fails to start says why.
        let stderr_path = self.data_dir.with_extension("stderr");
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(&stderr_path).expect("stderr file");
        // Info level unless the test's own RUST_LOG says otherwise: plans offered,
        // allocations and follows are what a failing test's tail needs to show.
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,cairn_node=info".to_owned());
        let mut child = Command::new(all[0])
            .args(&all[1..])
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn cairn");
        let mut banner = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut banner).expect("banner");
        let Some(site_id) = banner.split_whitespace().nth(1) else {
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            panic!("{} printed no banner; its stderr ends: {:?}", self.addr, tail);
        };
        self.site_id = site_id.to_owned();
        self.child = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stays, frozen, until [`Self::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let pid = self.pid().expect("signal to a running site").to_string();
        let status = Command::new("kill").args([which, &pid]).status().expect("kill");
        assert!(status.success(), "kill {which} {pid} failed");
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `limit` for the process to exit on its own: its exit status, or
    /// `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.as_mut()?.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the process wrote to stderr so far (kept next to its data dir).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("stderr")).unwrap_or_default()
    }
}

impl Drop for SiteProc {
    fn drop(&mut self) {
        self.kill();
        // A failing test: the end of what the site logged, since its data dir (and the
        // log beside it) goes away with the test's temporary directory.
        if std::thread::panicking() {
            let said = self.stderr();
            let lines: Vec<&str> = said.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- site {} ({}) logged, last {} lines:", self.addr, self.site_id, tail.len());
            for line in tail {
                eprintln!("  {line}");
            }
        }
    }
}

/// Lines of a site's log a failing test prints.
const LOG_TAIL_LINES: usize = 40;

/// A UDP port free on loopback now.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up by default): a port picked from
    // there could be taken, before the site binds it, by one of the many ephemeral
    // sockets running sites open (gossip relays, client endpoints). Each test process
    // walks its own stretch of the range, so parallel test binaries rarely meet.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (base + step) % SPAN) as u16;
        let free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// Issues the site of `spec` its certificate with `cairn cluster issue-cert`, unless its
/// data dir holds one: a core site's, or a replicant's when its flags say `--role
/// replicant`.
fn issue_site_certificate(spec: &SiteSpec) {
    if spec.data_dir.join("tls").join(tls::CERT).exists() {
        return;
    }
    let replicant = spec.extra.windows(2).any(|w| w[0] == "--role" && w[1] == "replicant");
    issue_site_cert(&spec.bin, &spec.cluster_dir, &spec.data_dir, replicant);
}

/// Runs `bin cluster issue-cert --cluster-dir CLUSTER --site|--replicant --data-dir DATA`.
pub fn issue_site_cert(bin: &Path, cluster: &Path, data_dir: &Path, replicant: bool) {
    let out = Command::new(bin)
        .args(["cluster", "issue-cert", "--cluster-dir"])
        .arg(cluster)
        .arg(if replicant { "--replicant" } else { "--site" })
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("cairn cluster issue-cert runs");
    assert!(out.status.success(), "issue-cert: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes a cluster's CA dir under `root` (`root/cluster`), with the operator's
/// credentials beside it (see [`operator_dir`]).
pub fn new_cluster_dir(root: &Path) -> PathBuf {
    let dir = root.join("cluster");
    tls::init_cluster_dir(&dir).expect("cluster init");
    dir
}

/// The operator's credentials of the cluster whose CA is in `cluster_dir`.
pub fn operator_dir(cluster_dir: &Path) -> PathBuf {
    tls::operator_dir_beside(cluster_dir)
}

/// `record` sealed by the operator of the cluster of `cluster_dir` (its credentials
/// beside the CA's directory), as `cairn ctl db create|set|drop` seals what it sends: no
/// site takes a db record from gossip without an operator's seal.
pub fn sealed(cluster_dir: &Path, mut record: DbRecord) -> DbRecord {
    let operator = Credentials::load(&operator_dir(cluster_dir)).expect("the operator's credentials");
    record.seal = Some(operator.signer().expect("a signing key").seal(&record));
    record
}

/// Issues credentials for `identity` (an operator or a client, say) into `root/name`.
pub fn issue_credentials(cluster_dir: &Path, identity: &tls::Identity, out: &Path) -> PathBuf {
    tls::issue_to_dir(cluster_dir, identity, out, 30).expect("issuing credentials");
    out.to_owned()
}

/// Talks to sites with the operator's certificate, as `cairn ctl` does.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    signer: Signer,
}

impl Client {
    /// A client with the operator's credentials of the cluster of `cluster_dir` (inside a
    /// tokio runtime).
    pub fn new(cluster_dir: &Path, family: SocketAddr) -> Self {
        Self::with_credentials(&operator_dir(cluster_dir), family)
    }

    /// A client with the credentials in `dir`, whatever identity they name.
    pub fn with_credentials(dir: &Path, family: SocketAddr) -> Self {
        let credentials = Credentials::load(dir).expect("credentials");
        let config = TransportConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            ..TransportConfig::default()
        };
        Self {
            signer: credentials.signer().expect("a signing key"),
            endpoint: Endpoint::client(&credentials, config, family).expect("client endpoint"),
        }
    }

    /// A db creation, change or drop, sealed with these credentials (see
    /// `cairn_transport::operator`).
    pub async fn change_db(&self, at: SocketAddr, change: &DbChange) -> Result<Response, String> {
        change_db(&self.endpoint, at, &self.signer, change).await.map_err(|e| e.to_string())
    }

    /// One request.
    pub async fn request(&self, at: SocketAddr, request: &Request) -> Result<Response, String> {
        self.endpoint.request(at, request).await.map_err(|e| e.to_string())
    }

    /// The site's status.
    pub async fn status(&self, at: SocketAddr) -> Result<SiteStatus, String> {
        match self.request(at, &Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(format!("status answered {other:?}")),
        }
    }

    /// The site's view.
    pub async fn view(&self, at: SocketAddr) -> Result<ClusterView, String> {
        match self.request(at, &Request::Dump).await? {
            Response::Dump { json } => serde_json::from_str(&json).map_err(|e| e.to_string()),
            other => Err(format!("dump answered {other:?}")),
        }
    }

    /// Creates a db.
    pub async fn create_db(&self, at: SocketAddr, name: &str, shards: u32, replication: u32) {
        let change = DbChange::Create {
            name: DbName::new(name).expect("name"),
            settings: DbSettings::new(shards, replication, Retention::default()).expect("settings in range"),
        };
        match self.change_db(at, &change).await {
            Ok(Response::DbCreated { .. }) => {}
            other => panic!("create db answered {other:?}"),
        }
    }

    /// Offers a plan.
    pub async fn schedule(&self, at: SocketAddr, plan: &Plan) -> Response {
        self.request(at, &Request::Schedule(plan.clone())).await.expect("schedule")
    }

    /// Publishes `messages` at `at`; the ids on success.
    pub async fn publish(
        &self,
        at: SocketAddr,
        db: &str,
        shard: u32,
        messages: &[Vec<u8>],
    ) -> Result<Vec<EntryId>, String> {
        let request = Request::Publish {
            db: DbName::new(db).expect("name"),
            shard,
            messages: messages.iter().map(|m| serde_bytes::ByteBuf::from(m.clone())).collect(),
        };
        match self.request(at, &request).await? {
            Response::Published { ids } => Ok(ids),
            other => Err(format!("publish answered {other:?}")),
        }
    }

    /// Every entry of the shard at `at`, in its arrival order.
    pub async fn read_all(&self, at: SocketAddr, db: &str, shard: u32) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let request = Request::Read { db: DbName::new(db).expect("name"), shard, from, max: 10_000 };
            match self.request(at, &request).await? {
                Response::Entries { entries, next, .. } => {
                    if entries.is_empty() {
                        return Ok(out);
                    }
                    out.extend(entries.into_iter().map(|e| e.entry));
                    from = next;
                }
                other => return Err(format!("read answered {other:?}")),
            }
        }
    }

    /// Closes the endpoint.
    pub async fn close(self) {
        self.endpoint.close().await;
    }
}

/// The entries sorted by id, and whether any id appears twice.
pub fn sorted(mut entries: Vec<Entry>) -> (Vec<Entry>, bool) {
    entries.sort_by_key(|e| e.id);
    let dup = entries.windows(2).any(|w| w[0].id == w[1].id);
    (entries, dup)
}

/// A digest of a sorted entry set (ids and payloads), for comparing replicas.
pub fn digest(sorted: &[Entry]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in sorted {
        e.id.hash(&mut h);
        e.payload.hash(&mut h);
    }
    h.finish()
}

/// A process's anonymous resident memory (`RssAnon` in `/proc/PID/status`), in KiB:
/// its heap and stacks, without the pages of files it maps (a site maps its LMDB file,
/// whose pages are the data itself).
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon")
}

/// Samples the anonymous memory of processes every 50 ms on a thread, keeping each
/// one's peak, until [`RssPeaks::stop`].
#[derive(Debug)]
pub struct RssPeaks {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl RssPeaks {
    /// Starts sampling `pids`.
    pub fn start(pids: &[u32]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pids, flag) = (pids.to_vec(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0; pids.len()];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let now = status
                        .lines()
                        .find_map(|l| l.strip_prefix("RssAnon:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    *peak = (*peak).max(now);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peaks
        });
        Self { stop, thread }
    }

    /// Stops sampling: each process's peak, KiB (0 for one that was never seen).
    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// `n` free loopback addresses.
pub fn loopback_addrs(n: usize) -> Vec<SocketAddr> {
    (0..n).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect()
}

/// Waits until `at`'s view shows `n` live sites.
pub async fn wait_live_sites(client: &Client, at: SocketAddr, n: usize, limit: Duration) {
    wait_for(&format!("{n} live sites"), limit, async || {
        let view = client.view(at).await.ok()?;
        (view.sites.iter().filter(|s| view.is_live(s.site_id)).count() == n).then_some(())
    })
    .await;
}

/// Polls `f` every 200 ms until it answers `Some`, or panics after `limit` saying `what`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `f` every 200 ms until it answers `Ok`, or panics after `limit` saying `what`
/// and the last error `f` gave (so a failure says what was still wrong).
pub async fn wait_for_ok<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(value) => return value,
            Err(last) => assert!(start.elapsed() < limit, "{what}: not within {limit:?}; last: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `cairn ctl --node NODE --credentials <operator of CLUSTER> ARGS...` with the
/// binary `bin`: whether it exited 0, and its stdout then stderr.
pub fn ctl(bin: &Path, cluster: &Path, node: SocketAddr, args: &[&str]) -> (bool, String) {
    ctl_as(bin, &operator_dir(cluster), node, args)
}

/// Runs `cairn ctl --node NODE --credentials CREDENTIALS ARGS...`.
pub fn ctl_as(bin: &Path, credentials: &Path, node: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .args(["ctl", "--node", &node.to_string(), "--credentials"])
        .arg(credentials)
        .args(args)
        .output()
        .expect("cairn ctl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
