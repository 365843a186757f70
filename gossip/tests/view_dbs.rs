//! Db settings in the view: changes, drops, and a db created again after a drop.

use std::net::SocketAddr;

use cairn_gossip::summary::{
    DbSummary, Label, ReplicaPhase, ReplicaSummary, SiteSummary, SummaryKey, encode_value,
};
use cairn_gossip::view::{DroppedDb, NodeInput, ViewContext, build_view};
use cairn_inventory::{DbName, DbRecord, DbSettings, Hlc, Retention, Role, SiteId};

fn hlc(ms: u64) -> Hlc {
    Hlc { wall_ms: ms, logical: 0 }
}

fn name() -> DbName {
    DbName::new("d").unwrap()
}

fn site(n: u8, role: Role) -> (String, String) {
    let summary = SiteSummary {
        drain: None,
        role,
        addr: Label::truncated(&format!("127.0.0.1:{}", 7000 + u16::from(n))),
        version: Label::truncated("t"),
        started_ms: 0,
        zone: None,
        capacity: 100,
        leaving: false,
        draining: false,
        certificate_expires_ms: 0,
    };
    (SummaryKey::Site.render(), encode_value(&summary))
}

/// Site `n` holding `record` (if any) and ready replicas of `shards`.
fn node(n: u8, live: bool, record: Option<&DbRecord>, shards: &[u32]) -> NodeInput {
    let mut kv = vec![site(n, Role::Core)];
    if let Some(r) = record {
        kv.push((SummaryKey::Db(name()).render(), encode_value(&DbSummary::from(r))));
    }
    for shard in shards {
        let r = ReplicaSummary {
            phase: ReplicaPhase::Ready,
            entries: 1,
            bytes: 1,
            frontier_digest: 0,
            frontier: cairn_inventory::Frontier::default(),
            progress: None,
        };
        kv.push((SummaryKey::Replica(name(), *shard).render(), encode_value(&r)));
    }
    NodeInput {
        site_id: SiteId(u128::from(n)),
        generation: 1,
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(n))),
        live,
        last_seen_ms: None,
        key_values: kv,
        forged: Vec::new(),
        unverified: None,
    }
}

#[test]
fn a_changed_replication_factor_wins_over_the_holders_older_records() {
    let created =
        DbRecord::new(name(), DbSettings::new(2, 2, Retention::default()).unwrap(), hlc(10), SiteId(1));
    let mut raised = created.clone();
    raised.settings.replication = cairn_inventory::Replication::new(3).unwrap();
    raised.changed = hlc(20);
    let view = build_view(
        SiteId(1),
        &[
            node(1, true, Some(&created), &[0, 1]),
            node(2, true, Some(&raised), &[0, 1]),
            node(3, true, None, &[]),
        ],
        &ViewContext::at(1_000_000),
    );
    let db = view.db(&name()).unwrap();
    assert_eq!((db.replication(), db.changed, db.created), (3, hlc(20), hlc(10)));
    assert_eq!(db.record(), raised);
    assert!(view.dropped.is_empty());
    // Both shards are now short of the new factor; no conflict is reported.
    assert!(view.warnings.iter().all(|w| !matches!(w, cairn_gossip::view::Warning::ConflictingDb { .. })));
    assert!(view.warnings.iter().any(|w| matches!(w, cairn_gossip::view::Warning::UnderReplicated { .. })));
}

#[test]
fn a_drop_hides_the_db_and_a_new_creation_ignores_the_old_replicas_of_a_site_that_was_down() {
    let old = DbRecord::new(name(), DbSettings::new(2, 2, Retention::default()).unwrap(), hlc(10), SiteId(1));
    let mut tomb = old.clone();
    tomb.dropped = true;
    tomb.changed = hlc(30);
    // Site 1 dropped it; site 2 was down and still holds the old db's replicas.
    let dropped = build_view(
        SiteId(1),
        &[node(1, true, Some(&tomb), &[]), node(2, false, Some(&old), &[0, 1])],
        &ViewContext::at(1_000_000),
    );
    assert!(dropped.db(&name()).is_none());
    assert_eq!(dropped.dropped, vec![DroppedDb { tombstone: Some(tomb.clone()), name: name(), at: hlc(30) }]);

    // Created again (after the drop) on site 3 with other settings.
    let again =
        DbRecord::new(name(), DbSettings::new(4, 1, Retention::default()).unwrap(), hlc(40), SiteId(3));
    let view = build_view(
        SiteId(1),
        &[
            node(1, true, Some(&tomb), &[]),
            node(2, false, Some(&old), &[0, 1]),
            node(3, true, Some(&again), &[2]),
        ],
        &ViewContext::at(1_000_000),
    );
    let db = view.db(&name()).unwrap();
    assert_eq!((db.shards(), db.replication(), db.created), (4, 1, hlc(40)));
    let holders: Vec<(u32, SiteId)> =
        db.placement.iter().flat_map(|s| s.replicas.iter().map(move |r| (s.shard, r.site_id))).collect();
    assert_eq!(holders, vec![(2, SiteId(3))], "site 2's replicas belong to the dropped db");
    assert_eq!(view.dropped, vec![DroppedDb { tombstone: Some(tomb.clone()), name: name(), at: hlc(30) }]);
}

/// Site `n` as a replicant holding a copy of `d`/0 with `frontier`.
fn replicant(n: u8, live: bool, record: &DbRecord, frontier: Vec<(SiteId, u64)>) -> NodeInput {
    let mut node = node(n, live, Some(record), &[]);
    node.key_values[0] = site(n, Role::Replicant);
    let copy = ReplicaSummary {
        phase: ReplicaPhase::Following { caught_up: true },
        entries: 7,
        bytes: 70,
        frontier_digest: 0,
        frontier: cairn_inventory::Frontier(frontier.into_iter().collect()),
        progress: None,
    };
    node.key_values.push((SummaryKey::Replica(name(), 0).render(), encode_value(&copy)));
    node
}

#[test]
fn a_replicants_copies_are_followers_with_their_lag_never_replicas() {
    let created =
        DbRecord::new(name(), DbSettings::new(1, 2, Retention::default()).unwrap(), hlc(10), SiteId(1));
    let with_frontier = |mut n: NodeInput, frontier: Vec<(SiteId, u64)>| {
        let r = ReplicaSummary {
            phase: ReplicaPhase::Ready,
            entries: 1,
            bytes: 1,
            frontier_digest: 0,
            frontier: cairn_inventory::Frontier(frontier.into_iter().collect()),
            progress: None,
        };
        n.key_values.retain(|(k, _)| !k.starts_with("r:"));
        n.key_values.push((SummaryKey::Replica(name(), 0).render(), encode_value(&r)));
        n
    };
    let (a, b) = (SiteId(1), SiteId(2));
    let core = [
        with_frontier(node(1, true, Some(&created), &[0]), vec![(a, 10)]),
        with_frontier(node(2, true, Some(&created), &[0]), vec![(a, 10), (b, 5)]),
    ];
    let copy = replicant(3, true, &created, vec![(a, 7)]);
    let view = build_view(SiteId(1), &[core[0].clone(), core[1].clone(), copy], &ViewContext::at(1_000_000));
    let shard = &view.db(&name()).unwrap().placement[0];
    assert_eq!(shard.replicas.len(), 2, "the copy is not a replica");
    assert_eq!(shard.followers.len(), 1);
    let f = &shard.followers[0];
    assert_eq!(
        (f.site_id, f.state, f.caught_up),
        (SiteId(3), cairn_gossip::view::FollowerState::Following, true)
    );
    // Behind site 2 by 3 of a's entries and all 5 of b's.
    assert_eq!(f.lag_entries, Some(8));
    let site = view.site(SiteId(3)).unwrap();
    assert_eq!((site.role, site.replicas, site.following), (Role::Replicant, 0, 1));
    assert!(view.warnings.is_empty(), "{:?}", view.warnings);

    // A dead replicant: no warning, nothing under-replicated; with no live ready
    // replica, the lag cannot be told.
    let dead = replicant(3, false, &created, vec![(a, 7)]);
    let view =
        build_view(SiteId(1), &[core[0].clone(), core[1].clone(), dead.clone()], &ViewContext::at(1_000_000));
    assert!(view.warnings.is_empty(), "{:?}", view.warnings);
    let mut alone = core[0].clone();
    alone.live = false;
    let view = build_view(SiteId(3), &[alone, dead], &ViewContext::at(1_000_000));
    assert_eq!(view.db(&name()).unwrap().placement[0].followers[0].lag_entries, None);
    // The JSON round-trips (readers refuse unknown fields).
    let json = serde_json::to_string(&view).unwrap();
    assert!(json.contains("\"followers\"") && json.contains("\"lag_entries\":null"), "{json}");
    assert_eq!(serde_json::from_str::<cairn_gossip::ClusterView>(&json).unwrap(), view);
}

#[test]
fn lag_from_huge_frontiers_saturates_instead_of_overflowing() {
    use cairn_inventory::{Frontier, MAX_SEQ};
    let far = Frontier([(SiteId(1), MAX_SEQ), (SiteId(2), MAX_SEQ), (SiteId(3), 5)].into());
    let none = Frontier::default();
    assert_eq!(far.entries_beyond(&none), 2 * MAX_SEQ + 5);
    let widest = Frontier((0..8).map(|i| (SiteId(i), MAX_SEQ)).collect());
    assert_eq!(widest.entries_beyond(&none), u64::MAX, "saturates");
    assert_eq!(far.entries_beyond(&far), 0);
    assert_eq!(Frontier([(SiteId(3), 5)].into()).entries_beyond(&Frontier([(SiteId(3), 9)].into())), 0);
}
