//! Replicants in pure logic, on random clusters: planners and automation decide exactly
//! the same with or without replicant sites (live or dead, holding copies of every
//! shard) in the view — a replicant is never chosen, counted or waited for; and which
//! copies a replicant keeps (`follow::changes`) converges in one application to one
//! copy of every shard of each followed db the view holds, never touching anything but
//! `following` copies.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_gossip::SiteState;
use cairn_gossip::view::{ClusterView, FollowerView};
use cairn_inventory::{DbName, DbRecord, ReplicaRecord, ReplicaState, Role, SiteId};
use cairn_node::automation::{AutomationConfig, lost_sites, next_change, planner_of_record};
use cairn_node::follow::{Change, changes};
use cairn_node::planner::operator::preview;
use cairn_transport::PlanRequest;
use proptest::prelude::*;

mod common;
use common::{build, shape};

/// `view` with `n` replicant sites added, the first `dead` of them dead, each following
/// every shard of every db (the lowest site ids, so a wrongly counted replicant would
/// also become the planner of record).
fn with_replicants(view: &ClusterView, n: usize, dead: usize) -> ClusterView {
    let mut out = view.clone();
    for i in 0..n {
        let mut site = common::site(900 + i, 1, 100, SiteState::Live);
        site.site_id = SiteId(i as u128 + 1);
        site.role = Role::Replicant;
        site.state = if i < dead { SiteState::Dead } else { SiteState::Live };
        site.last_seen_ms = Some(0);
        for db in &mut out.dbs {
            for shard in &mut db.placement {
                shard.followers.push(FollowerView {
                    site_id: site.site_id,
                    state: cairn_gossip::view::FollowerState::Following,
                    caught_up: true,
                    entries: 10,
                    bytes: 1000,
                    frontier: cairn_inventory::Frontier::default(),
                    lag_entries: Some(0),
                    progress: None,
                });
                site.following += 1;
            }
        }
        out.sites.push(site);
    }
    out
}

const CONFIG: AutomationConfig = AutomationConfig {
    every: Duration::from_millis(100),
    lost_after: Duration::ZERO,
    repair: true,
    rebalance: true,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn planners_ignore_replicants(s in shape(12, 16), n in 1..4usize, dead in 0..4usize, kill in any::<u16>()) {
        let mut view = build(&s);
        for (i, site) in view.sites.iter_mut().enumerate().take(16) {
            if kill >> i & 1 == 1 && i % 3 == 0 {
                site.state = SiteState::Dead;
                site.last_seen_ms = Some(0);
            }
        }
        let with = with_replicants(&view, n, dead.min(n));
        let me = view.sites[0].site_id;
        prop_assert_eq!(planner_of_record(&with), planner_of_record(&view));
        let lost_with = lost_sites(&with, 1_000, 0, CONFIG.lost_after);
        let lost_without = lost_sites(&view, 1_000, 0, CONFIG.lost_after);
        prop_assert_eq!(
            next_change(&with, me, &lost_with, &CONFIG),
            next_change(&view, me, &lost_without, &CONFIG)
        );
        for request in [PlanRequest::Rebalance, PlanRequest::Repair] {
            let a = preview(&with, &request, me).map(|p| format!("{p:?}"));
            let b = preview(&view, &request, me).map(|p| format!("{p:?}"));
            prop_assert_eq!(a, b);
        }
        // Nor can an operator move a replica to a replicant.
        if let Some(shard) = view.dbs.first().and_then(|d| d.placement.first())
            && let Some(from) = shard.replicas.first()
        {
            let request = PlanRequest::Move {
                db: view.dbs[0].name.clone(),
                shard: shard.shard,
                from: from.site_id,
                to: SiteId(1),
            };
            prop_assert!(preview(&with, &request, me).is_err());
        }
    }

    #[test]
    fn a_replicants_copies_converge_in_one_sync(
        s in shape(6, 8),
        follow_mask in any::<u8>(),
        have_mask in any::<u32>(),
        stale in prop::collection::vec((0..6u8, 0..8u32), 0..6),
        core in prop::collection::vec((0..4usize, 0..8u32), 0..3),
    ) {
        let view = build(&s);
        // Followed: some of the view's dbs and some names it does not hold (yet).
        let mut follow: Vec<DbName> = Vec::new();
        for i in 0..6 {
            if follow_mask >> i & 1 == 1 {
                follow.push(DbName::new(format!("db{i}")).unwrap());
            }
        }
        // What the site holds: records and copies of some dbs (some not followed any
        // more, some of dbs the view does not hold), and a few core replicas.
        let mut records: Vec<DbRecord> = Vec::new();
        let mut replicas: Vec<ReplicaRecord> = Vec::new();
        let record = |db: &DbName, shard, state| ReplicaRecord { db: db.clone(), shard, state, created_ms: 0, updated_ms: 0 };
        for (i, db) in view.dbs.iter().enumerate() {
            if have_mask >> i & 1 == 1 {
                records.push(db.record());
                for shard in 0..db.shards() {
                    if have_mask >> ((i * 5 + shard as usize) % 32) & 1 == 1 {
                        replicas.push(record(&db.name, shard, ReplicaState::Following { caught_up: shard % 2 == 0 }));
                    }
                }
            }
        }
        for (d, shard) in stale {
            let db = DbName::new(format!("db{d}")).unwrap();
            if !replicas.iter().any(|r| r.db == db && r.shard == shard) {
                replicas.push(record(&db, shard, ReplicaState::Following { caught_up: true }));
            }
        }
        for (d, shard) in core {
            if let Some(db) = view.dbs.get(d) {
                let shard = shard % db.shards();
                replicas.retain(|r| !(r.db == db.name && r.shard == shard));
                replicas.push(record(&db.name, shard, ReplicaState::Ready));
            }
        }
        let core_before: Vec<ReplicaRecord> =
            replicas.iter().filter(|r| r.state == ReplicaState::Ready).cloned().collect();

        // Apply once, as `follow::sync` does.
        for change in changes(&follow, &records, &replicas, &view) {
            match change {
                Change::LearnDb(r) => {
                    prop_assert!(follow.contains(&r.name));
                    records.retain(|x| x.name != r.name);
                    records.push(r);
                }
                Change::Add { db, shard } => {
                    prop_assert!(records.iter().any(|r| r.name == db && shard < r.shards()), "a copy of an unknown db");
                    prop_assert!(!replicas.iter().any(|r| r.db == db && r.shard == shard), "a second copy");
                    replicas.push(record(&db, shard, ReplicaState::Following { caught_up: false }));
                }
                Change::Remove { db, shard } => {
                    let i = replicas.iter().position(|r| r.db == db && r.shard == shard);
                    let following = i.is_some_and(|i| matches!(replicas[i].state, ReplicaState::Following { .. }));
                    prop_assert!(following, "removed something other than a copy");
                    replicas.remove(i.unwrap());
                }
            }
        }
        prop_assert_eq!(changes(&follow, &records, &replicas, &view), Vec::new(), "one sync is enough");
        let core_after: Vec<ReplicaRecord> =
            replicas.iter().filter(|r| r.state == ReplicaState::Ready).cloned().collect();
        prop_assert_eq!(core_before, core_after, "core replicas untouched");
        let wanted: BTreeSet<(DbName, u32)> = view
            .dbs
            .iter()
            .filter(|d| follow.contains(&d.name))
            .flat_map(|d| (0..d.shards()).map(|s| (d.name.clone(), s)))
            .collect();
        let held: BTreeSet<(DbName, u32)> = replicas.iter().map(|r| (r.db.clone(), r.shard)).collect();
        prop_assert!(wanted.is_subset(&held), "every shard of every followed db is held");
        for r in &replicas {
            if matches!(r.state, ReplicaState::Following { .. }) {
                prop_assert!(follow.contains(&r.db), "a copy of a db not followed: {}", r.db);
            }
        }
    }
}
