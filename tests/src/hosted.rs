//! A cluster with each site on its own host ([`crate::netns::Hosts`]), and the checks
//! fault scenarios share: views that agree, replicas that hold every acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, EntryId, SiteId};

use crate::netns::Hosts;
use crate::{Client, SiteProc, SiteSpec, digest, new_cluster_dir, sorted, wait_for};

/// The port every site listens on, on its own host's address.
pub const PORT: u16 = 7000;

/// `n` sites, site `i` on host `i`, all seeded by site 0. Dropped in order: client,
/// processes, then hosts, then the files.
#[derive(Debug)]
pub struct HostedCluster {
    /// Talks to the sites from the test's own namespace.
    pub client: Client,
    /// The site processes, by host.
    pub sites: Vec<SiteProc>,
    /// The hosts.
    pub hosts: Hosts,
    /// Site `i`'s address.
    pub addrs: Vec<SocketAddr>,
    /// The cluster dir (CA and operator certificate).
    pub cluster_dir: PathBuf,
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl HostedCluster {
    /// Makes `n` hosts (`tag` and `subnet` as for [`Hosts::create`]) and no site yet
    /// ([`Self::launch`] starts them in order). `Err` says why hosts could not be made.
    pub fn hosts_only(bin: &Path, tag: &str, subnet: u8, n: usize) -> Result<Self, String> {
        let hosts = Hosts::create(tag, subnet, n)?;
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cluster_dir = new_cluster_dir(root.path());
        let addrs: Vec<SocketAddr> = (0..n).map(|i| SocketAddr::new(hosts.addr(i), PORT)).collect();
        Ok(Self {
            client: Client::new(&cluster_dir, addrs[0]),
            sites: Vec::new(),
            hosts,
            addrs,
            cluster_dir,
            bin: bin.to_owned(),
            root,
        })
    }

    /// Starts the site of the next host without one, with `extra` flags.
    pub fn launch(&mut self, extra: Vec<String>) {
        let mut spec = self.spec(self.sites.len());
        spec.extra = extra;
        self.sites.push(SiteProc::start(&spec));
    }

    /// How site `i` is started: its host's prefix, data dir `root/s<i>`, seeded by site 0.
    pub fn spec(&self, i: usize) -> SiteSpec {
        let mut spec = SiteSpec::new(
            &self.bin,
            self.root.path(),
            &format!("s{i}"),
            &self.cluster_dir,
            self.addrs[i],
            &self.addrs[..1],
        );
        spec.prefix = [self.hosts.prefix(i), spec.prefix].concat();
        spec
    }

    /// The test's scratch directory (data dirs are `s<i>` in it).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Site `i`'s id.
    pub fn id(&self, i: usize) -> SiteId {
        self.sites[i].site_id.parse().expect("site id")
    }

    /// Waits until site `at` sees `n` live sites.
    pub async fn wait_live(&self, at: usize, n: usize, limit: Duration) {
        crate::wait_live_sites(&self.client, self.addrs[at], n, limit).await;
    }

    /// Waits until every site in `among` answers a view and all agree (see [`agreed`]);
    /// answers the agreed view.
    pub async fn wait_agreed(&self, among: &[usize], limit: Duration) -> ClusterView {
        wait_for("every site's view the same", limit, async || {
            let mut views = Vec::new();
            for i in among {
                views.push(self.client.view(self.addrs[*i]).await.ok()?);
            }
            agreed(&views).then(|| views.swap_remove(0))
        })
        .await
    }
}

/// Whether views agree on what placement and automation act on: each site's state,
/// generation and draining flag; every db's settings and each replica's site, state and
/// handover target; the running plans and their steps. (Counters that move with every
/// write — entries, bytes, frontiers, last-seen times — are left out.)
pub fn agreed(views: &[ClusterView]) -> bool {
    let key = |v: &ClusterView| {
        let sites: Vec<_> = v.sites.iter().map(|s| (s.site_id, s.state, s.generation, s.draining)).collect();
        let dbs: Vec<_> = v
            .dbs
            .iter()
            .map(|d| {
                let placement: Vec<Vec<_>> = d
                    .placement
                    .iter()
                    .map(|s| s.replicas.iter().map(|r| (r.site_id, r.state, r.to)).collect())
                    .collect();
                (d.name.clone(), d.replication(), d.settings.retention, d.changed, placement)
            })
            .collect();
        let plans: Vec<_> = v.plans.iter().map(|p| (p.site_id, p.plan_id, p.step)).collect();
        (sites, dbs, plans)
    };
    views.windows(2).all(|w| key(&w[0]) == key(&w[1]))
}

/// Every shard of `db` has at least `replication` replicas, all ready on live sites, and
/// no plan runs.
pub fn settled(view: &ClusterView, db: &str, replication: usize) -> bool {
    view.plans.is_empty()
        && view.db(&DbName::new(db).expect("name")).is_some_and(|d| {
            d.placement.iter().all(|s| {
                s.replicas.len() >= replication
                    && s.replicas.iter().all(|r| r.is_ready() && view.is_live(r.site_id))
            })
        })
}

/// Checks every replica of every shard of `db` in `view`: each holds exactly the same
/// entries, no entry twice, and every id `acked` lists for its shard. Answers the
/// number of entries checked, or what is wrong.
pub async fn check_replicas(
    client: &Client,
    view: &ClusterView,
    db: &str,
    acked: &BTreeMap<u32, BTreeSet<EntryId>>,
) -> Result<usize, String> {
    let d = view.db(&DbName::new(db).expect("name")).ok_or(format!("no db {db} in the view"))?;
    let mut checked = 0;
    for shard in &d.placement {
        let mut digests = BTreeSet::new();
        for r in &shard.replicas {
            let site = view.site(r.site_id).ok_or("replica on an unknown site")?;
            let at: SocketAddr = site.addr.parse().map_err(|e| format!("{e}"))?;
            let (entries, dup) = sorted(client.read_all(at, db, shard.shard).await?);
            if dup {
                return Err(format!("shard {} on {} holds an entry twice", shard.shard, r.site_id.short()));
            }
            let ids: BTreeSet<EntryId> = entries.iter().map(|e| e.id).collect();
            let missing = acked.get(&shard.shard).map_or(0, |a| a.difference(&ids).count());
            if missing > 0 {
                return Err(format!(
                    "shard {} on {} lacks {missing} acknowledged writes",
                    shard.shard,
                    r.site_id.short()
                ));
            }
            digests.insert(digest(&entries));
            checked += entries.len();
        }
        if digests.len() > 1 {
            return Err(format!("replicas of shard {} differ", shard.shard));
        }
    }
    Ok(checked)
}
