//! Planners on arbitrary views: whatever peers gossip that decodes (any counts in range,
//! any mix of replica states, dead and draining sites, replicas of shards out of range,
//! handovers to sites that do not exist, conflicting creations, plans in flight), the
//! view is whole and every planner — allocation, automation's next change, every
//! operator request — returns only plans [`check_change`] finds safe, without panicking.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use cairn_gossip::summary::{
    DbSummary, Label, PlanSummary, ReplicaPhase, ReplicaSummary, SiteSummary, StatusText, SummaryKey,
    encode_value,
};
use cairn_gossip::view::{NodeInput, ViewContext, build_view};
use cairn_inventory::{DbName, DbSettings, Frontier, Hlc, PlanId, Retention, Role, SiteId};
use cairn_node::planner::SitePlans;
use cairn_node::planner::check::{check_change, workout};
use proptest::prelude::*;

const NOW: u64 = 10_000_000;

#[derive(Debug, Clone)]
struct Db {
    shards: u32,
    replication: u32,
}

#[derive(Debug, Clone)]
struct Site {
    role_replicant: bool,
    live: bool,
    draining: bool,
    zone: u8,
    capacity: u32,
    /// (db index, creation variant): variant 0 is the common creation, others conflict.
    dbs: Vec<(usize, u8)>,
    /// (db index, shard, phase 0-3, handover target index).
    replicas: Vec<(usize, u32, u8, u8)>,
    /// Dbs this site runs a plan for.
    plans: Vec<usize>,
    frontier_seq: u64,
}

fn db() -> impl Strategy<Value = Db> {
    (1u32..=24, 1u32..=16).prop_map(|(shards, replication)| Db { shards, replication })
}

fn site(dbs: usize) -> impl Strategy<Value = Site> {
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        0u8..3,
        1u32..=300,
        prop::collection::vec((0..dbs, prop::bool::weighted(0.1).prop_map(u8::from)), 0..=dbs),
        prop::collection::vec((0..dbs, 0u32..28, 0u8..4, 0u8..14), 0..40),
        prop::collection::vec(0..dbs, 0..2),
        0u64..1000,
    )
        .prop_map(
            |(role_replicant, live, draining, zone, capacity, dbs, replicas, plans, frontier_seq)| Site {
                role_replicant,
                live,
                draining,
                zone,
                capacity,
                dbs,
                replicas,
                plans,
                frontier_seq,
            },
        )
}

fn id(i: usize) -> SiteId {
    SiteId(((i as u128 + 1) << 96) | 0x1000)
}

fn name(i: usize) -> DbName {
    DbName::new(format!("db{i}")).unwrap()
}

fn inputs(dbs: &[Db], sites: &[Site]) -> Vec<NodeInput> {
    sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let addr = SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16));
            let summary = SiteSummary {
                drain: None,
                role: if s.role_replicant { Role::Replicant } else { Role::Core },
                addr: Label::truncated(&addr.to_string()),
                version: Label::truncated("t"),
                started_ms: 0,
                zone: Some(Label::truncated(&format!("z{}", s.zone))),
                capacity: s.capacity,
                leaving: false,
                draining: s.draining,
                certificate_expires_ms: 0,
            };
            let mut kv = vec![(SummaryKey::Site.render(), encode_value(&summary))];
            for (d, variant) in &s.dbs {
                let spec = &dbs[*d];
                let shards = if *variant == 0 { spec.shards } else { (spec.shards % 7) + 1 };
                let created = Hlc { wall_ms: 100 + u64::from(*variant) * (1 + i as u64), logical: 0 };
                let record = DbSummary {
                    seal: None,
                    settings: DbSettings::new(shards, spec.replication, Retention::default()).unwrap(),
                    created,
                    origin: id(0),
                    changed: created,
                    dropped: false,
                    supersedes: None,
                };
                kv.push((SummaryKey::Db(name(*d)).render(), encode_value(&record)));
            }
            for (d, shard, phase, to) in &s.replicas {
                let phase = match phase {
                    0 => ReplicaPhase::CatchingUp,
                    1 => ReplicaPhase::Ready,
                    2 => ReplicaPhase::HandingOver { to: id(usize::from(*to)) },
                    _ => ReplicaPhase::Following { caught_up: to % 2 == 0 },
                };
                let replica = ReplicaSummary {
                    phase,
                    entries: s.frontier_seq,
                    bytes: s.frontier_seq * 10,
                    frontier_digest: 0,
                    frontier: Frontier([(id(i), s.frontier_seq)].into()),
                    progress: None,
                };
                kv.push((SummaryKey::Replica(name(*d), *shard).render(), encode_value(&replica)));
            }
            for d in &s.plans {
                let plan = PlanSummary {
                    plan_id: PlanId(7),
                    priority: 10,
                    step: 0,
                    steps: 1,
                    status: StatusText::truncated("running"),
                };
                kv.push((SummaryKey::Plan(name(*d)).render(), encode_value(&plan)));
            }
            NodeInput {
                site_id: id(i),
                generation: 1,
                gossip_addr: addr,
                live: s.live,
                last_seen_ms: Some(0),
                key_values: kv,
                forged: Vec::new(),
                unverified: None,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_planner_returns_only_safe_plans_on_any_view(
        (dbs, sites) in prop::collection::vec(db(), 1..4)
            .prop_flat_map(|dbs| { let n = dbs.len(); (Just(dbs), prop::collection::vec(site(n), 1..12)) }),
        me in 0usize..12,
        lost_mask in any::<u16>(),
    ) {
        let nodes = inputs(&dbs, &sites);
        let me = id(me % sites.len());
        let view = build_view(me, &nodes, &ViewContext::at(NOW));
        let lost: BTreeSet<SiteId> = view
            .sites
            .iter()
            .enumerate()
            .filter(|(i, s)| lost_mask & (1 << (i % 16)) != 0 && !view.is_live(s.site_id))
            .map(|(_, s)| s.site_id)
            .collect();
        if let Err(why) = workout(&view, me, &lost) {
            prop_assert!(false, "{why}\nview: {}", serde_json::to_string(&view).unwrap());
        }
    }
}

#[test]
fn a_move_of_a_shard_with_no_complete_copy_is_refused_as_unsafe() {
    // Site 0 holds shard 0 only catching up: a rebalance that moved it would add a
    // replica with no upstream — ready and empty at once.
    let dbs = [Db { shards: 1, replication: 1 }];
    let site = |replicas| Site {
        role_replicant: false,
        live: true,
        draining: false,
        zone: 0,
        capacity: 100,
        dbs: vec![(0, 0)],
        replicas,
        plans: vec![],
        frontier_seq: 1,
    };
    let view =
        build_view(id(0), &inputs(&dbs, &[site(vec![(0, 0, 0, 0)]), site(vec![])]), &ViewContext::at(NOW));
    let mut plans = SitePlans::new();
    plans.insert(
        id(1),
        cairn_inventory::Plan {
            db: name(0),
            plan_id: PlanId(1),
            priority: 10,
            origin: cairn_inventory::PlanOrigin::Automatic { planner: id(0) },
            steps: vec![cairn_inventory::Step::AddReplica { shard: 0, upstreams: vec![] }],
        },
    );
    let why = check_change(&view, &BTreeMap::from([(name(0), plans)])).unwrap_err();
    assert!(why.contains("no upstream"), "{why}");
}
