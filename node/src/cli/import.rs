//! `cairn import`: writes into a stopped site's inventory its db settings and replicas
//! as a placement records them — a dump file (`cairn dump --format json`) or a live
//! site's view — so a site whose inventory was lost comes back and catches its shards
//! up from the other replicas.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cairn_gossip::ClusterView;
use cairn_inventory::{Inventory, InventoryConfig, SiteId};
use cairn_node::planner::import::placement_of;
use cairn_transport::Credentials;
use clap::{ArgGroup, Args};

use crate::UsageError;
use crate::cli::addr::parse_addr;
use crate::cli::client::{ConnArgs, with_client};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["from", "from_cluster"])))]
pub(crate) struct ImportArgs {
    /// The stopped site's data dir (made if it holds no inventory).
    #[arg(long, value_name = "DIR", env = "CAIRN_DATA_DIR")]
    data_dir: PathBuf,
    /// A placement in the JSON of `cairn dump --format json`.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// A live site of the cluster, whose view is the placement.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    from_cluster: Option<SocketAddr>,
    /// The site's id (32 hex digits): needed when the data dir holds no inventory (it
    /// was lost); otherwise it must match the one there.
    #[arg(long, value_name = "HEX")]
    site: Option<SiteId>,
    /// The operator's credentials: the cluster a new inventory belongs to, and how to
    /// reach `--from-cluster`.
    #[arg(
        long,
        value_name = "DIR",
        env = "CAIRN_CREDENTIALS",
        default_value = "./cairn-data/cluster-operator"
    )]
    credentials: PathBuf,
}

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let view = match (&args.from, args.from_cluster) {
        (Some(file), _) => read_view(file)?,
        (None, Some(node)) => {
            let conn = ConnArgs { node, credentials: args.credentials.clone(), timeout: 10 };
            with_client(&conn, async |client| crate::cli::dump::node_view(client).await)?
        }
        (None, None) => unreachable!("clap requires a source"),
    };
    let existing = if args.data_dir.join("data.mdb").exists() {
        Some(Inventory::open_existing(&args.data_dir, InventoryConfig::default())?)
    } else {
        None
    };
    let site = site_of(&args, existing.as_ref())?;
    let placement = placement_of(&view, site).map_err(|e| UsageError::from_err(&e.into()))?;
    let made = existing.is_none();
    let inventory = match existing {
        Some(inventory) => inventory,
        None => create(&args, site)?,
    };
    let outcome = match inventory.import(&placement.dbs) {
        Ok(outcome) => outcome,
        Err(error) => {
            drop(inventory);
            if made {
                // The inventory made for this import goes too: nothing is left behind.
                for file in ["data.mdb", "lock.mdb", cairn_inventory::LOCK_FILE] {
                    let _ = std::fs::remove_file(args.data_dir.join(file));
                }
            }
            return Err(anyhow::Error::from(error)
                .context(format!("nothing was written to {}", args.data_dir.display())));
        }
    };
    println!(
        "site {site}: {} db records and {} replicas written ({} replicas already there)",
        outcome.dbs_written, outcome.replicas_written, outcome.replicas_present
    );
    for why in &placement.left_out {
        println!("not imported: {why}");
    }
    if outcome.replicas_written > 0 {
        println!("start the site: its new replicas catch up from the other holders");
    }
    Ok(())
}

/// Reads and checks a placement file; errors name the file, line and column.
fn read_view(file: &std::path::Path) -> anyhow::Result<ClusterView> {
    crate::cli::dump::read_view_file(file, "a cairn placement")
}

/// The site the data dir belongs to: its inventory's id, or `--site` where it holds none.
fn site_of(args: &ImportArgs, existing: Option<&Inventory>) -> anyhow::Result<SiteId> {
    if let Some(inventory) = existing {
        let found = inventory.identity().site_id;
        if let Some(site) = args.site
            && site != found
        {
            bail!(
                "{} belongs to site {found}, not {site}; leave out --site or use that site's data dir",
                args.data_dir.display()
            );
        }
        return Ok(found);
    }
    args.site.ok_or_else(|| {
        UsageError::from_err(&anyhow::anyhow!(
            "{} holds no inventory: give the lost site's id with --site (see `cairn dump`)",
            args.data_dir.display()
        ))
    })
}

/// Makes an inventory for `site` in the cluster of `--credentials`.
fn create(args: &ImportArgs, site: SiteId) -> anyhow::Result<Inventory> {
    let cluster = Credentials::load(&args.credentials)
        .with_context(|| format!("loading the cluster's credentials from {}", args.credentials.display()))?
        .cluster_id();
    Ok(Inventory::open_as(&args.data_dir, cluster, site, InventoryConfig::default())?)
}
