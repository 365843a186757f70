//! `cairn cluster …`: the cluster's certificate authority, and the certificates it
//! issues to sites, replicants, operators and applications. Only these commands (and
//! `cairn local`, for its own sites) read the CA's key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_inventory::Role;
use cairn_node::credentials;
use cairn_transport::tls::{self, ClusterCa, Identity, PrincipalName};
use clap::{ArgGroup, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Create a cluster: a new certificate authority (ca.pem, ca.key) in DIR, and the
    /// operator's credentials in DIR-operator beside it. Prints the cluster id.
    Init {
        /// Where to write the CA (refused if it already holds a CA key).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a certificate naming one identity: a core site or a replicant (into its data
    /// dir, whose inventory is created if there is none), or an operator or an
    /// application (into --out).
    #[command(group(ArgGroup::new("identity").required(true).args(["site", "replicant", "operator", "client"])))]
    IssueCert {
        /// The CA dir (`cairn cluster init --out`).
        #[arg(long, value_name = "DIR", env = "CAIRN_CLUSTER_DIR")]
        cluster_dir: PathBuf,
        /// For a core site: bound to the site id of --data-dir's inventory.
        #[arg(long, requires = "data_dir")]
        site: bool,
        /// For a replicant: bound to the site id of --data-dir's inventory.
        #[arg(long, requires = "data_dir")]
        replicant: bool,
        /// For an operator named NAME (may do everything).
        #[arg(long, value_name = "NAME", requires = "out")]
        operator: Option<String>,
        /// For an application named NAME (publish, read and streams only).
        #[arg(long, value_name = "NAME", requires = "out")]
        client: Option<String>,
        /// The site's data dir (--site, --replicant): the credentials go to DIR/tls.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["operator", "client", "out"])]
        data_dir: Option<PathBuf>,
        /// Where to write an operator's or application's credentials (not inside the CA dir).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["site", "replicant"])]
        out: Option<PathBuf>,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = tls::DEFAULT_VALID_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Mint a bearer token for the HTTP API, naming an application (--client) or an
    /// operator (--operator); printed alone on the last line. Sites check it with the
    /// CA certificate; revoking the identity revokes its tokens.
    #[command(group(ArgGroup::new("who").required(true).args(["client", "operator"])))]
    IssueToken {
        /// The CA dir (`cairn cluster init --out`).
        #[arg(long, value_name = "DIR", env = "CAIRN_CLUSTER_DIR")]
        cluster_dir: PathBuf,
        /// For an application named NAME (publish, read and streams only).
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// For an operator named NAME.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
        /// Days the token stays valid.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
    /// Revoke a certificate (its PEM file) or an identity (a site id: its site and
    /// replicant certificates; or a URI such as cairn://client/app): the operator signs
    /// the cluster's revocation list with the new entry and hands it to --node, which
    /// gossips it. Every site then refuses the revoked peer's connections and leaves it
    /// out of its view. An identity stays revoked (a revoked site needs a new data dir).
    Revoke {
        /// A certificate file, a site id or an identity URI.
        target: String,
        #[command(flatten)]
        conn: crate::cli::client::ConnArgs,
    },
}

pub(crate) fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Revoke { target, conn } => crate::cli::revoke::revoke(&target, &conn)?,
        ClusterCommand::IssueToken { cluster_dir, client, operator, days } => {
            let ca = ClusterCa::load(&cluster_dir)
                .with_context(|| format!("loading the CA from {}", cluster_dir.display()))?;
            let identity = match (client, operator) {
                (Some(name), _) => Identity::Client(
                    PrincipalName::new(&name).map_err(|e| crate::UsageError::from_err(&e.into()))?,
                ),
                (None, Some(name)) => Identity::Operator(
                    PrincipalName::new(&name).map_err(|e| crate::UsageError::from_err(&e.into()))?,
                ),
                (None, None) => {
                    return Err(crate::UsageError::from_err(&anyhow::anyhow!(
                        "give --client NAME or --operator NAME"
                    )));
                }
            };
            let token = ca.issue_token(&identity, cairn_inventory::now_ms(), days)?;
            println!(
                "bearer token for {}, valid {days} days (send it as Authorization: Bearer TOKEN):",
                identity.uri()
            );
            println!("{token}");
        }
        ClusterCommand::Init { out } => {
            let (id, operator) = tls::init_cluster_dir(&out)
                .with_context(|| format!("creating the cluster's CA in {}", out.display()))?;
            println!("cluster {id}");
            println!("CA in {} (keep ca.key private: only issue-cert reads it)", out.display());
            println!("operator credentials in {}", operator.display());
            println!("export CAIRN_CLUSTER_DIR={}", absolute(&out).display());
            println!("export CAIRN_CREDENTIALS={}", absolute(&operator).display());
        }
        ClusterCommand::IssueCert { cluster_dir, site, replicant, operator, client, data_dir, out, days } => {
            let ca = ClusterCa::load(&cluster_dir)
                .with_context(|| format!("loading the CA from {}", cluster_dir.display()))?;
            let person = |name: String, make: fn(PrincipalName) -> Identity| {
                PrincipalName::new(&name).map(make).map_err(|e| crate::UsageError::from_err(&e.into()))
            };
            let person = match (operator, client) {
                (Some(name), _) => Some(person(name, Identity::Operator)?),
                (None, Some(name)) => Some(person(name, Identity::Client)?),
                (None, None) => None,
            };
            match (person, data_dir, out) {
                (Some(identity), None, Some(out)) => {
                    if same_dir(&out, &cluster_dir) {
                        return Err(crate::UsageError::from_err(&anyhow::anyhow!(
                            "--out is the CA dir: write credentials outside it, so the CA key stays alone"
                        )));
                    }
                    tls::issue_to_dir(&cluster_dir, &identity, &out, days)
                        .with_context(|| format!("issuing a certificate into {}", out.display()))?;
                    println!("issued {} into {} (valid {days} days)", identity.uri(), out.display());
                }
                (None, Some(data_dir), None) => {
                    let role = if replicant { Role::Replicant } else { Role::Core };
                    debug_assert!(site != replicant);
                    let id = credentials::issue_site(&ca, &data_dir, role, days)
                        .with_context(|| format!("issuing a certificate for {}", data_dir.display()))?;
                    let identity = credentials::site_identity(role, id);
                    let dir = credentials::site_credentials_dir(&data_dir);
                    println!("issued {} into {} (valid {days} days)", identity.uri(), dir.display());
                }
                _ => unreachable!("clap's groups allow only these"),
            }
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => absolute(a) == absolute(b),
    }
}
