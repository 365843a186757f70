//! `cairn cluster …`: the cluster's certificate authority.

use std::path::PathBuf;

use anyhow::Context;
use cairn_transport::tls;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Create a cluster: a new certificate authority (ca.pem, ca.key) and the operator's
    /// credentials (cert.pem, key.pem) in DIR. Prints the cluster id.
    Init {
        /// Where to write the cluster dir (refused if it already holds a CA key).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign credentials for a site or an operator: writes ca.pem, cert.pem and key.pem to OUT.
    IssueCert {
        /// The cluster dir holding the CA.
        #[arg(long, value_name = "DIR", env = "CAIRN_CLUSTER_DIR")]
        cluster_dir: PathBuf,
        /// The certificate's name (1-64 of A-Z a-z 0-9 - _ .).
        #[arg(long)]
        name: String,
        /// Where to write the credentials.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = tls::DEFAULT_VALID_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

pub(crate) fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Init { out } => {
            let id = tls::init_cluster_dir(&out)
                .with_context(|| format!("creating cluster dir {}", out.display()))?;
            println!("cluster {id}");
            println!("cluster dir {} (keep ca.key private)", out.display());
        }
        ClusterCommand::IssueCert { cluster_dir, name, out, days } => {
            tls::issue_to_dir(&cluster_dir, &name, &out, days)
                .with_context(|| format!("issuing a certificate from {}", cluster_dir.display()))?;
            println!("issued {name} into {} (valid {days} days)", out.display());
        }
    }
    Ok(())
}
