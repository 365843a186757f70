//! The view builder on generated inputs: deterministic, order-independent, newest
//! generation wins, and db conflicts resolve by HLC then site id, never by input order.

use std::net::SocketAddr;

use cairn_gossip::decoded::DecodeCache;
use cairn_gossip::summary::{
    DbSummary, Label, ReplicaPhase, ReplicaSummary, SiteSummary, SummaryKey, encode_value,
};
use cairn_gossip::view::{NodeInput, SiteState, ViewContext, Warning, build_view, build_view_cached};
use cairn_inventory::{DbName, DbSettings, Frontier, Hlc, Retention, Role, SiteId};
use proptest::prelude::*;

fn site_summary(leaving: bool) -> SiteSummary {
    SiteSummary {
        drain: None,
        role: Role::Core,
        addr: Label::truncated("127.0.0.1:1"),
        version: Label::truncated("t"),
        started_ms: 0,
        zone: None,
        capacity: 100,
        leaving,
        draining: false,
        certificate_expires_ms: 0,
    }
}

#[derive(Debug, Clone)]
struct Spec {
    site: u8,
    generation: u64,
    live: bool,
    leaving: bool,
    /// (shards, replication, hlc wall, hlc logical) of db "d", if this site holds it.
    db: Option<(u32, u32, u64, u32)>,
    /// Ready replicas of shards of "d".
    ready: Vec<u32>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..6u8,
        1..4u64,
        any::<bool>(),
        any::<bool>(),
        prop::option::of((1..4u32, 1..3u32, 0..3u64, 0..2u32)),
        prop::collection::vec(0..4u32, 0..3),
    )
        .prop_map(|(site, generation, live, leaving, db, ready)| Spec {
            site,
            generation,
            live,
            leaving,
            db,
            ready,
        })
}

/// Every HLC of the tests is far in the past of this clock.
fn ctx() -> ViewContext {
    ViewContext::at(1_000_000)
}

fn input(s: &Spec) -> NodeInput {
    let id = SiteId(u128::from(s.site) + 1);
    let mut kv = vec![(SummaryKey::Site.render(), encode_value(&site_summary(s.leaving)))];
    let name = DbName::new("d").unwrap();
    if let Some((shards, replication, wall, logical)) = s.db {
        let db = DbSummary {
            seal: None,
            settings: DbSettings::new(shards, replication, Retention::default()).unwrap(),
            created: Hlc { wall_ms: wall, logical },
            origin: id,
            changed: Hlc { wall_ms: wall, logical },
            dropped: false,
            supersedes: None,
        };
        kv.push((SummaryKey::Db(name.clone()).render(), encode_value(&db)));
    }
    for shard in &s.ready {
        let r = ReplicaSummary {
            phase: ReplicaPhase::Ready,
            entries: 1,
            bytes: 1,
            frontier_digest: 0,
            frontier: Frontier::default(),
            progress: None,
        };
        kv.push((SummaryKey::Replica(name.clone(), *shard).render(), encode_value(&r)));
    }
    NodeInput {
        site_id: id,
        generation: s.generation,
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(s.site))),
        live: s.live,
        last_seen_ms: None,
        key_values: kv,
        forged: Vec::new(),
        unverified: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// A view built with the cache of earlier builds (of other inputs, some values
    /// changed, some corrupted) is the view built from scratch.
    #[test]
    fn a_cached_build_is_the_same_view(rounds in prop::collection::vec((prop::collection::vec(spec(), 0..8), any::<u8>()), 1..6)) {
        let mut cache = DecodeCache::new();
        for (specs, corrupt) in rounds {
            let mut ids = std::collections::BTreeSet::new();
            let specs: Vec<Spec> = specs.into_iter().filter(|s| ids.insert((s.site, s.generation))).collect();
            let mut inputs: Vec<NodeInput> = specs.iter().map(input).collect();
            if let Some((_, value)) = inputs.get_mut(corrupt as usize % 8).and_then(|n| n.key_values.last_mut()) {
                value.push_str("}garbage");
            }
            let fresh = build_view(SiteId(1), &inputs, &ctx());
            let cached = build_view_cached(SiteId(1), &inputs, &ctx(), &mut cache);
            prop_assert_eq!(cached, fresh);
            prop_assert!(cache.len() <= inputs.iter().map(|n| n.key_values.len()).sum::<usize>());
        }
    }

    #[test]
    fn the_view_does_not_depend_on_input_order(specs in prop::collection::vec(spec(), 0..10), seed in any::<u64>()) {
        // chitchat holds one state per (node id, generation, address): no duplicates.
        let mut ids = std::collections::BTreeSet::new();
        let specs: Vec<Spec> = specs.into_iter().filter(|s| ids.insert((s.site, s.generation))).collect();
        let inputs: Vec<NodeInput> = specs.iter().map(input).collect();
        let mut shuffled = inputs.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let a = build_view(SiteId(1), &inputs, &ctx());
        let b = build_view(SiteId(1), &shuffled, &ctx());
        // Equal up to warning order is not enough: require exact equality, so every
        // site renders the same dump from the same state.
        let mut wa = a.warnings.clone(); let mut wb = b.warnings.clone();
        wa.sort_by_key(|w| format!("{w:?}")); wb.sort_by_key(|w| format!("{w:?}"));
        prop_assert_eq!(wa, wb);
        prop_assert_eq!(&a.sites, &b.sites);
        prop_assert_eq!(&a.dbs, &b.dbs);
        prop_assert_eq!(&a.plans, &b.plans);
    }

    #[test]
    fn newest_generation_wins_and_states_follow_liveness(specs in prop::collection::vec(spec(), 1..10)) {
        let inputs: Vec<NodeInput> = specs.iter().map(input).collect();
        let view = build_view(SiteId(1), &inputs, &ctx());
        for site in &view.sites {
            let newest = specs.iter().filter(|s| u128::from(s.site) + 1 == site.site_id.0).max_by_key(|s| s.generation).unwrap();
            prop_assert_eq!(site.generation, newest.generation);
            let all_newest: Vec<_> = specs.iter().filter(|s| u128::from(s.site) + 1 == site.site_id.0 && s.generation == newest.generation).collect();
            // With duplicate generations either node may be kept; only check unique ones.
            if all_newest.len() == 1 {
                let expected = match (newest.live, newest.leaving) {
                    (true, _) => SiteState::Live,
                    (false, true) => SiteState::Left,
                    (false, false) => SiteState::Dead,
                };
                prop_assert_eq!(site.state, expected);
            }
        }
    }

    #[test]
    fn conflicting_creations_resolve_by_hlc_then_site(specs in prop::collection::vec(spec(), 1..10)) {
        // One node per site, so every site's db record is seen.
        let mut seen = std::collections::BTreeSet::new();
        let specs: Vec<Spec> = specs.into_iter().filter(|s| seen.insert(s.site)).collect();
        let view = build_view(SiteId(1), &specs.iter().map(input).collect::<Vec<_>>(), &ctx());
        let holders: Vec<(Hlc, SiteId, u32, u32)> = specs.iter().filter_map(|s| s.db.map(|(sh, r, w, l)| {
            (Hlc { wall_ms: w, logical: l }, SiteId(u128::from(s.site) + 1), sh, r)
        })).collect();
        match holders.iter().min() {
            None => prop_assert!(view.dbs.is_empty()),
            Some((hlc, origin, shards, replication)) => {
                let db = &view.dbs[0];
                prop_assert_eq!((db.created, db.origin, db.shards(), db.replication()), (*hlc, *origin, *shards, *replication));
                let losers = holders.iter().filter(|h| (h.2, h.3) != (*shards, *replication)).count();
                let conflicts = view.warnings.iter().filter(|w| matches!(w, Warning::ConflictingDb { .. })).count();
                prop_assert_eq!(conflicts, losers);
                prop_assert_eq!(db.placement.len() as u32, *shards);
            }
        }
    }
}

#[test]
fn under_replication_counts_only_ready_replicas_on_live_sites() {
    let mk = |site, live, ready: Vec<u32>, db| Spec { site, generation: 1, live, leaving: false, db, ready };
    let specs = [
        mk(0, true, vec![0, 1], Some((2, 2, 0, 0))),
        mk(1, true, vec![0], None),
        mk(2, false, vec![1], None),
    ];
    let view = build_view(SiteId(1), &specs.iter().map(input).collect::<Vec<_>>(), &ctx());
    let under: Vec<&Warning> =
        view.warnings.iter().filter(|w| matches!(w, Warning::UnderReplicated { .. })).collect();
    assert_eq!(under.len(), 1);
    let Warning::UnderReplicated { shards, .. } = under[0] else { unreachable!() };
    assert_eq!(shards, &[1], "shard 1's second ready replica is on a dead site");
    let dead: Vec<&Warning> =
        view.warnings.iter().filter(|w| matches!(w, Warning::DeadSiteHoldsReplicas { .. })).collect();
    assert!(
        matches!(dead[..], [Warning::DeadSiteHoldsReplicas { site_id: SiteId(3), replicas: 1, .. }]),
        "{dead:?}"
    );
}

#[test]
fn an_undecodable_value_is_an_invalid_warning_and_the_rest_is_kept() {
    let mut node =
        input(&Spec { site: 0, generation: 1, live: true, leaving: false, db: None, ready: vec![] });
    node.key_values.push(("db:x".into(), "not base64!".into()));
    node.key_values.push(("unrelated".into(), "ignored".into()));
    let view = build_view(SiteId(1), &[node], &ctx());
    assert_eq!(view.sites.len(), 1);
    assert!(matches!(&view.warnings[..], [Warning::Invalid { key, .. }] if key == "db:x"));
}

#[test]
fn the_dump_json_has_the_documented_fields() {
    let specs =
        [Spec { site: 0, generation: 1, live: true, leaving: false, db: Some((2, 1, 5, 0)), ready: vec![0] }];
    let view = build_view(SiteId(1), &specs.iter().map(input).collect::<Vec<_>>(), &ctx());
    let json: serde_json::Value = serde_json::to_value(&view).unwrap();
    assert_eq!(json["site"], SiteId(1).to_string());
    let site = &json["sites"][0];
    for field in ["site_id", "addr", "role", "state"] {
        assert!(!site[field].is_null(), "sites[].{field}");
    }
    assert_eq!(site["role"], "core");
    assert_eq!(site["state"], "live");
    let db = &json["dbs"][0];
    assert_eq!(
        (db["name"].as_str(), db["settings"]["shards"].as_u64(), db["settings"]["replication"].as_u64()),
        (Some("d"), Some(2), Some(1))
    );
    let replica = &db["placement"][0]["replicas"][0];
    assert_eq!(db["placement"][0]["shard"], 0);
    assert_eq!((replica["state"].as_str(), replica["entries"].as_u64()), (Some("ready"), Some(1)));
    assert_eq!(replica["site_id"], SiteId(1).to_string());
    assert!(json["plans"].is_array());
    assert_eq!(json["warnings"][0]["kind"], "under_replicated");
}
