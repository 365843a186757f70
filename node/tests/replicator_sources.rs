//! Which pull streams the replicator runs (`sources`, pure): a catching-up replica copies
//! from one upstream at a time — those already reached keep streaming, plus the first
//! live one not reached yet — and a ready replica follows every other live holder.

use std::collections::HashSet;

use cairn_gossip::SiteState;
use cairn_inventory::{DbName, ReplicaRecord, ReplicaState, SiteId};
use cairn_node::data::replicator::{catch_up_from, caught_up, sources};

mod common;
use common::{Shape, build};

#[test]
fn a_catching_up_replica_pulls_from_one_new_upstream_at_a_time() {
    let mut view = build(&Shape { old: 4, new: 0, zones: 1, capacities: false, dbs: vec![(1, 3)], dead: 0 });
    let ids: Vec<SiteId> = view.sites.iter().map(|s| s.site_id).collect();
    let (me, a, b, c) = (ids[0], ids[1], ids[2], ids[3]);
    hold(&mut view, &[a, b, c]);
    let db = DbName::new("db0").unwrap();
    let record = |state| ReplicaRecord { db: db.clone(), shard: 0, state, created_ms: 0, updated_ms: 0 };
    let catching = [record(ReplicaState::CatchingUp { upstreams: vec![a, b, c] })];
    let streams = |view: &_, reached: &HashSet<SiteId>| -> Vec<SiteId> {
        sources(me, &catching, view, |_, _| reached.clone()).keys().map(|k| k.2).collect()
    };
    assert_eq!(streams(&view, &HashSet::new()), vec![a], "first, only the first upstream");
    assert_eq!(streams(&view, &HashSet::from([a])), vec![a, b], "then the next, the first still following");
    // A dead upstream is skipped.
    view.sites.iter_mut().find(|s| s.site_id == b).unwrap().state = SiteState::Dead;
    let mut got = streams(&view, &HashSet::from([a]));
    got.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(got, want);
    // Every upstream reached: all (live) stream on.
    let mut got = streams(&view, &HashSet::from([a, c]));
    got.sort();
    assert_eq!(got, want);
}

/// Makes `sites` the ready holders of db0/0 in `view`.
fn hold(view: &mut cairn_gossip::ClusterView, sites: &[SiteId]) {
    let replicas = &mut view.dbs[0].placement[0].replicas;
    let model = replicas[0].clone();
    *replicas =
        sites.iter().map(|s| cairn_gossip::view::ReplicaView { site_id: *s, ..model.clone() }).collect();
}

#[test]
fn a_catch_up_passes_over_upstreams_that_gave_the_shard_up_and_falls_back_to_its_holders() {
    let mut view = build(&Shape { old: 5, new: 0, zones: 1, capacities: false, dbs: vec![(1, 2)], dead: 0 });
    let ids: Vec<SiteId> = view.sites.iter().map(|s| s.site_id).collect();
    let (me, a, b, c, d) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let db = DbName::new("db0").unwrap();
    // Planned from a and b; a has since handed its copy to c.
    hold(&mut view, &[b, c]);
    assert_eq!(catch_up_from(me, &db, 0, &[a, b], &view), vec![b]);
    // b too (to d): no upstream holds it any more, so the holders stand in.
    hold(&mut view, &[c, d]);
    assert_eq!(catch_up_from(me, &db, 0, &[a, b], &view), vec![c, d]);
    let reached = |sites: &[SiteId]| sites.iter().copied().collect::<HashSet<_>>();
    let from = catch_up_from(me, &db, 0, &[a, b], &view);
    assert!(!caught_up(me, &from, &reached(&[]), &view));
    assert!(caught_up(me, &from, &reached(&[c, d]), &view), "ready once the holders are copied");
    // A dead upstream is kept (it may come back, and counts as settled), a live holder joins it.
    view.sites.iter_mut().find(|s| s.site_id == a).unwrap().state = SiteState::Dead;
    assert_eq!(catch_up_from(me, &db, 0, &[a, b], &view), vec![a, c, d]);
}

#[test]
fn a_ready_replica_follows_every_other_live_holder() {
    let view = build(&Shape { old: 3, new: 0, zones: 1, capacities: false, dbs: vec![(1, 3)], dead: 0 });
    let ids: Vec<SiteId> = view.sites.iter().map(|s| s.site_id).collect();
    let db = DbName::new("db0").unwrap();
    let ready = [ReplicaRecord { db, shard: 0, state: ReplicaState::Ready, created_ms: 0, updated_ms: 0 }];
    let mut got: Vec<SiteId> =
        sources(ids[0], &ready, &view, |_, _| HashSet::new()).keys().map(|k| k.2).collect();
    got.sort();
    let mut want = vec![ids[1], ids[2]];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_replicants_copy_follows_one_live_holder_and_keeps_it() {
    let mut view = build(&Shape { old: 5, new: 0, zones: 1, capacities: false, dbs: vec![(1, 3)], dead: 0 });
    let db = DbName::new("db0").unwrap();
    let holders: Vec<SiteId> = view.dbs[0].placement[0].replicas.iter().map(|r| r.site_id).collect();
    let copy = |caught_up| {
        [ReplicaRecord {
            db: db.clone(),
            shard: 0,
            state: ReplicaState::Following { caught_up },
            created_ms: 0,
            updated_ms: 0,
        }]
    };
    let streams = |me: SiteId, view: &_, caught_up: bool| {
        sources(me, &copy(caught_up), view, |_, _| HashSet::new()).into_values().collect::<Vec<_>>()
    };
    let me = SiteId(7);
    let first = streams(me, &view, false);
    assert_eq!(first.len(), 1, "one upstream: {first:?}");
    assert!(holders.contains(&first[0].site) && first[0].catching_up);
    // Once caught up, the same holder, no longer throttled as a catch-up.
    let after = streams(me, &view, true);
    assert_eq!((after.len(), after[0].site, after[0].catching_up), (1, first[0].site, false));
    // Its holder dies: another one; it comes back: the first again.
    let chosen = first[0].site;
    view.sites.iter_mut().find(|s| s.site_id == chosen).unwrap().state = SiteState::Dead;
    let moved = streams(me, &view, true);
    assert_eq!(moved.len(), 1);
    assert!(moved[0].site != chosen && holders.contains(&moved[0].site));
    view.sites.iter_mut().find(|s| s.site_id == chosen).unwrap().state = SiteState::Live;
    assert_eq!(streams(me, &view, true)[0].site, chosen);
    // Many replicants spread over the holders.
    let used: HashSet<SiteId> = (100..140).map(|i| streams(SiteId(i), &view, true)[0].site).collect();
    assert_eq!(used.len(), holders.len(), "40 replicants use every holder");
    // No live holder: nothing to pull from.
    for s in view.sites.iter_mut() {
        s.state = SiteState::Dead;
    }
    assert!(streams(me, &view, true).is_empty());
}
