//! Random cluster views for the planner property tests: sites (some in zones, some with
//! capacities, some joining late or dead) holding dbs placed by `allocate`.

#![allow(dead_code, unreachable_pub)]

use cairn_gossip::SiteState;
use cairn_gossip::view::{ClusterView, DbView, PlacementState, ReplicaView, ShardView, SiteView};
use cairn_inventory::{DbName, DbSettings, Hlc, Retention, Role, SiteId};
use cairn_node::planner;
use cairn_node::planner::allocate::place;
use proptest::prelude::*;

/// A random cluster: `old` sites hold `dbs` placed by `allocate`, then `new` sites join.
#[derive(Debug, Clone)]
pub struct Shape {
    pub old: usize,
    pub new: usize,
    pub zones: u8,
    pub capacities: bool,
    pub dbs: Vec<(u32, u32)>,
    pub dead: usize,
}

pub fn site(i: usize, zones: u8, capacity: u32, state: SiteState) -> SiteView {
    SiteView {
        site_id: SiteId(i as u128 * 104_729 + 11),
        addr: format!("127.0.0.1:{}", 7000 + i),
        role: Role::Core,
        state,
        generation: 1,
        version: "test".into(),
        zone: Some(format!("z{}", i % zones as usize)),
        capacity,
        draining: false,
        started_ms: 0,
        last_seen_ms: None,
        replicas: 0,
        bytes: 0,
        following: 0,
        certificate_expires_ms: None,
    }
}

pub fn build(shape: &Shape) -> ClusterView {
    let capacity = |i: usize| if shape.capacities { 1 + (i % 3) as u32 } else { 1 };
    let mut view = ClusterView {
        revocations: None,
        site: SiteId(1),
        sites: (0..shape.old).map(|i| site(i, shape.zones, capacity(i), SiteState::Live)).collect(),
        dbs: Vec::new(),
        dropped: Vec::new(),
        plans: Vec::new(),
        warnings: Vec::new(),
    };
    for (d, (shards, replication)) in shape.dbs.iter().enumerate() {
        let mut db = DbView {
            seal: None,
            name: DbName::new(format!("db{d}")).unwrap(),
            settings: DbSettings::new(*shards, *replication, Retention::default())
                .expect("settings in range"),
            created: Hlc { wall_ms: 1, logical: d as u32 },
            origin: SiteId(1),
            changed: Hlc { wall_ms: 1, logical: d as u32 },
            supersedes: None,
            placement: Vec::new(),
        };
        let placement = place(&db, &planner::candidates(&view));
        db.placement = placement
            .into_iter()
            .enumerate()
            .map(|(shard, sites)| ShardView {
                shard: shard as u32,
                followers: Vec::new(),
                replicas: sites
                    .into_iter()
                    .map(|site_id| ReplicaView {
                        site_id,
                        state: PlacementState::Ready,
                        to: None,
                        entries: 10,
                        bytes: 1000,
                        frontier: cairn_inventory::Frontier::default(),
                        progress: None,
                    })
                    .collect(),
            })
            .collect();
        view.dbs.push(db);
    }
    for i in shape.old..shape.old + shape.new {
        view.sites.push(site(i, shape.zones, capacity(i), SiteState::Live));
    }
    // Some joining sites died right away: they hold nothing and take nothing.
    for s in view.sites.iter_mut().rev().take(shape.dead.min(shape.new)) {
        s.state = SiteState::Dead;
    }
    view
}

/// Random cluster shapes of up to `max_sites` (old and new) sites and dbs of up to
/// `max_shards` shards. With `CAIRN_PROPTEST_FULL=1`, the full ranges the planners must
/// handle (50 sites, 512 shards) instead — slower, so opt-in.
pub fn shape(max_sites: usize, max_shards: u32) -> impl Strategy<Value = Shape> {
    let (max_sites, max_shards) =
        if std::env::var_os("CAIRN_PROPTEST_FULL").is_some() { (50, 512) } else { (max_sites, max_shards) };
    (
        1..=max_sites,
        0..=4usize,
        1..=4u8,
        any::<bool>(),
        prop::collection::vec((1..=max_shards, 1..=5u32), 1..4),
        0..=2usize,
    )
        .prop_map(|(old, new, zones, capacities, dbs, dead)| Shape {
            old,
            new,
            zones,
            capacities,
            dbs,
            dead,
        })
}
