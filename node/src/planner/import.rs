//! Which records of a cluster view belong to one site: what `cairn import` writes into
//! that site's inventory. Pure: the command reads the view (a dump file or a live site)
//! and applies the answer with [`cairn_inventory::Inventory::import`].

use cairn_gossip::ClusterView;
use cairn_inventory::{ImportedDb, SiteId};

/// What a view holds about one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePlacement {
    /// Each db the site holds replicas of, with those replicas and their upstreams.
    pub dbs: Vec<ImportedDb>,
    /// Replicas left out, each with the reason (no other ready copy to catch up from).
    pub left_out: Vec<String>,
}

/// Why a view cannot be imported for a site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The view does not list the site.
    #[error("site {0} is not in the placement (its `sites` list)")]
    UnknownSite(SiteId),
    /// A shard index the db does not have.
    #[error("db {db} lists shard {shard}, but has {shards} shards")]
    BadShard {
        /// The db.
        db: String,
        /// The shard listed.
        shard: u32,
        /// The db's shard count.
        shards: u32,
    },
}

/// The dbs and replicas `view` places on `site`. Each replica is to catch up from the
/// other sites holding a ready (or handing-over) copy of its shard; a replica with no
/// such copy is left out and said so.
pub fn placement_of(view: &ClusterView, site: SiteId) -> Result<SitePlacement, ImportError> {
    if view.site(site).is_none() {
        return Err(ImportError::UnknownSite(site));
    }
    let mut out = SitePlacement { dbs: Vec::new(), left_out: Vec::new() };
    for db in &view.dbs {
        let mut replicas = Vec::new();
        for shard in db.placement.iter().filter(|s| s.replicas.iter().any(|r| r.site_id == site)) {
            if shard.shard >= db.shards() {
                return Err(ImportError::BadShard {
                    db: db.name.to_string(),
                    shard: shard.shard,
                    shards: db.shards(),
                });
            }
            let upstreams: Vec<SiteId> = shard
                .replicas
                .iter()
                .filter(|r| r.site_id != site && r.is_complete())
                .map(|r| r.site_id)
                .collect();
            if upstreams.is_empty() {
                out.left_out.push(format!(
                    "db {} shard {}: no other ready replica to copy from",
                    db.name, shard.shard
                ));
            } else {
                replicas.push((shard.shard, upstreams));
            }
        }
        if !replicas.is_empty() {
            out.dbs.push(ImportedDb { record: db.record(), replicas });
        }
    }
    Ok(out)
}
