//! `cairn local`: a whole cluster on this machine, in one command.
//!
//! Makes the cluster's CA and the operator's credentials under the data root (once),
//! issues each site its certificate (the only command that does so besides `cairn cluster
//! issue-cert`), starts N sites as child processes on consecutive loopback ports, creates
//! a demo db, and prints the cluster view until SIGINT or SIGTERM, which stop every child
//! cleanly. Run again on the same data root, it starts the same sites (same ids, same
//! data).

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_inventory::{DbName, DbSettings, Retention, Role};
use cairn_node::credentials;
use cairn_transport::operator::DbChange;
use cairn_transport::tls::{self, ClusterCa, Credentials, Identity, PrincipalName};
use cairn_transport::{Request, Response};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::client::{Client, ConnArgs};
use crate::cli::dump::{node_view, render_table};

#[derive(Debug, Args)]
pub(crate) struct LocalArgs {
    /// Number of sites.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Port of the first site; the others follow (127.0.0.1:P, P+1, …).
    #[arg(long, default_value_t = 7001, value_parser = clap::value_parser!(u16).range(1024..=65000))]
    base_port: u16,
    /// Where the sites' data dirs and the cluster's certificates live.
    #[arg(long, value_name = "DIR", default_value = "./cairn-data")]
    data_root: PathBuf,
    /// Seconds between view refreshes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    refresh: u64,
    /// Serve the HTTP API from the first site at https://HOST:PORT (an operator's token
    /// for it is printed).
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::cli::addr::parse_addr)]
    http_listen: Option<SocketAddr>,
}

/// The demo db `cairn local` creates.
const DEMO_DB: &str = "demo";

/// Child sites, stopped (SIGTERM, then SIGKILL after a grace period) when dropped.
struct Children(Vec<(u16, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, child) in &self.0 {
            // SAFETY: kill(2) with a pid we spawned; it has no memory effects.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (port, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("site on port {port} did not stop in 10 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Issues the site of `data` a core site's certificate unless it holds a usable one of
/// this cluster.
fn ensure_site_certificate(ca: &ClusterCa, data: &Path) -> anyhow::Result<()> {
    let current = credentials::load_site(data, Role::Core).ok();
    if current.is_some_and(|c| c.cluster_id() == ca.cluster_id() && matches!(c.identity(), Identity::Site(_)))
    {
        return Ok(());
    }
    credentials::issue_site(ca, data, Role::Core, tls::DEFAULT_VALID_DAYS)
        .with_context(|| format!("issuing the certificate of {}", data.display()))?;
    Ok(())
}

fn spawn_site(root: &Path, ca: &ClusterCa, i: u16, args: &LocalArgs) -> anyhow::Result<(Child, String)> {
    let port = args.base_port + i;
    let data = root.join(format!("site{}", i + 1));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    ensure_site_certificate(ca, &data)?;
    let log = std::fs::File::create(data.join("cairn.log")).context("creating the site's log file")?;
    let seed = if i == 0 { args.base_port + 1 } else { args.base_port };
    let mut command = Command::new(std::env::current_exe().context("finding the cairn binary")?);
    command
        .arg("start")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(log);
    if args.nodes > 1 {
        command.args(["--seed", &format!("127.0.0.1:{seed}")]);
    }
    if let Some(http) = args.http_listen.filter(|_| i == 0) {
        command.args(["--http-listen", &http.to_string()]);
    }
    let mut child = command.spawn().context("starting a site")?;
    let mut banner = String::new();
    let stdout = child.stdout.take().context("the site's stdout")?;
    BufReader::new(stdout).read_line(&mut banner)?;
    if banner.is_empty() {
        let status = child.wait()?;
        bail!("site {} on port {port} exited ({status}); see {}", i + 1, data.join("cairn.log").display());
    }
    Ok((child, banner.trim().to_owned()))
}

pub(crate) fn run(args: LocalArgs) -> anyhow::Result<()> {
    let root = args.data_root.clone();
    let cluster = root.join("cluster");
    let operator = tls::operator_dir_beside(&cluster);
    if !cluster.join(tls::CA_KEY).exists() {
        let (id, _) = tls::init_cluster_dir(&cluster).context("creating the cluster's certificates")?;
        println!("created cluster {id} in {}", cluster.display());
    }
    let ca = ClusterCa::load(&cluster).context("loading the cluster's CA")?;
    if Credentials::load(&operator).map(|c| c.cluster_id() != ca.cluster_id()).unwrap_or(true) {
        let name = PrincipalName::new(tls::OPERATOR_NAME)?;
        tls::issue_to_dir(&cluster, &Identity::Operator(name), &operator, tls::DEFAULT_VALID_DAYS)
            .context("issuing the operator's credentials")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Signals are caught from here on: one that comes while the sites start, or while
    // the demo db is placed, stops everything as one that comes later does.
    let mut signals = {
        let _runtime = runtime.enter();
        Signals::install()?
    };
    let mut children = Children(Vec::new());
    for i in 0..args.nodes {
        let (child, banner) = spawn_site(&root, &ca, i, &args)?;
        println!("{banner}");
        children.0.push((args.base_port + i, child));
        if runtime.block_on(signals.came()) {
            println!("stopping {} sites…", children.0.len());
            children.stop();
            return Ok(());
        }
    }
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    println!("to use ctl and dump from here (and to issue more certificates):");
    println!("export CAIRN_CREDENTIALS={}", absolute(&operator).display());
    println!("export CAIRN_CLUSTER_DIR={}", absolute(&cluster).display());
    if let Some(http) = args.http_listen {
        let identity = Identity::Operator(PrincipalName::new(tls::OPERATOR_NAME)?);
        let token = ca.issue_token(&identity, cairn_inventory::now_ms(), 30)?;
        let host = if http.ip().is_loopback() || http.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            http.ip().to_string()
        };
        println!(
            "HTTP API of the first site (check it with {}):",
            absolute(&cluster.join(tls::CA_CERT)).display()
        );
        println!("export CAIRN_HTTP=https://{host}:{}", http.port());
        println!("export CAIRN_HTTP_TOKEN={token}");
        println!("the live page (trust {} in the browser, or accept its warning):", tls::CA_CERT);
        println!("https://{host}:{}/ui?token={token}", http.port());
        println!(
            "curl --cacert $CAIRN_CLUSTER_DIR/ca.pem -H \"Authorization: Bearer $CAIRN_HTTP_TOKEN\" $CAIRN_HTTP/v1/dbs/demo/messages"
        );
    }
    let conn = ConnArgs {
        node: SocketAddr::from(([127, 0, 0, 1], args.base_port)),
        credentials: operator.clone(),
        timeout: 10,
    };
    let result = runtime.block_on(watch(&conn, &args, &mut children, &mut signals));
    children.stop();
    result
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime's context).
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves at the next signal (or at once for one that came since the last).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// Whether a signal came while nobody was waiting (the runtime gets a moment to
    /// take in what the handlers recorded).
    async fn came(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(20), self.recv()).await.is_ok()
    }
}

/// Waits (up to 30 s) for the demo db to be placed, then writes a few messages to each
/// shard at one of its ready replicas. Answers how many.
async fn write_demo(client: &Client) -> anyhow::Result<usize> {
    let name = DbName::new(DEMO_DB)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let view = node_view(client).await?;
        let placed = view.db(&name).is_some_and(|d| {
            d.placement.iter().all(|s| s.replicas.iter().any(|r| r.is_ready() && view.is_live(r.site_id)))
        });
        if placed {
            break view;
        }
        anyhow::ensure!(Instant::now() < deadline, "the demo db was not placed within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut written = 0;
    for shard in &view.db(&name).expect("placed above").placement {
        let holder = shard.replicas.iter().find(|r| r.is_ready() && view.is_live(r.site_id));
        let Some(addr) = holder.and_then(|r| view.site(r.site_id)?.addr.parse().ok()) else { continue };
        let messages: Vec<serde_bytes::ByteBuf> = ["hello", "from", "cairn"]
            .iter()
            .map(|w| serde_bytes::ByteBuf::from(format!("{w} (shard {})", shard.shard).into_bytes()))
            .collect();
        let n = messages.len();
        match client
            .request_at(addr, &Request::Publish { db: name.clone(), shard: shard.shard, messages })
            .await?
        {
            Response::Published { .. } => written += n,
            other => bail!("{addr} answered the demo publish with {other:?}"),
        }
    }
    Ok(written)
}

/// Creates the demo db, then prints the view until a signal (or a site dies). A signal
/// while the demo db is being made stops at once too.
async fn watch(
    conn: &ConnArgs,
    args: &LocalArgs,
    children: &mut Children,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    let stopped = tokio::select! {
        made = make_demo(&client, args) => { made?; false }
        () = signals.recv() => true,
    };
    if !stopped {
        show_view(&client, args, children, signals).await?;
    }
    println!("stopping {} sites…", children.0.len());
    client.close().await;
    Ok(())
}

/// Creates the demo db and, the first time, writes a few messages into it.
async fn make_demo(client: &Client, args: &LocalArgs) -> anyhow::Result<()> {
    let replication = u32::from(args.nodes).min(2);
    let demo = DbChange::Create {
        name: DbName::new(DEMO_DB)?,
        settings: DbSettings::new(4, replication, Retention::default())?,
    };
    match client.change_db(&demo).await? {
        Response::DbCreated { created: true } => {
            println!("created db {DEMO_DB} (4 shards × {replication})");
            match write_demo(client).await {
                Ok(n) => println!(
                    "wrote {n} demo messages; read them with: cairn ctl --node {} read {DEMO_DB} --shard 0",
                    client.node()
                ),
                Err(error) => eprintln!("demo messages not written: {error:#}"),
            }
        }
        Response::DbCreated { created: false } => println!("db {DEMO_DB} is there from an earlier run"),
        Response::Rejected { reason } => println!("db {DEMO_DB} not created: {reason}"),
        other => bail!("unexpected answer to db create: {other:?}"),
    }
    Ok(())
}

/// Prints the view every `--refresh` seconds until a signal; an error when a site exits.
async fn show_view(
    client: &Client,
    args: &LocalArgs,
    children: &mut Children,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    loop {
        for (port, child) in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!("the site on port {port} exited ({status}); see its cairn.log");
            }
        }
        match node_view(client).await {
            Ok(view) => {
                if terminal {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render_table(&view));
                println!("\n(Ctrl-C stops every site)");
            }
            Err(error) => eprintln!("no view yet: {error:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.refresh)) => {}
            () = signals.recv() => return Ok(()),
        }
    }
}
