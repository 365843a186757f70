//! What a member can make a view believe: nothing out of range, nothing from a clock far
//! ahead, nothing beyond the caps — each such value an `invalid` warning naming the site
//! and the key, the rest of the view built as if it had not been said.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_gossip::summary::{DbSummary, Label, ReplicaPhase, SiteSummary, SummaryKey, encode_value};
use cairn_gossip::view::{NodeInput, ViewContext, ViewLimits, Warning, build_view};
use cairn_inventory::{DbName, DbSettings, Hlc, Retention, Role, SiteId, codec};
use serde::Serialize;

const NOW: u64 = 1_800_000_000_000;

/// A db summary with plain numbers, as a hostile member can encode it.
#[derive(Serialize)]
struct RawDb {
    shards: u32,
    replication: u32,
    retention: Retention,
    routing: u32,
    created: Hlc,
    origin: SiteId,
    changed: Hlc,
    dropped: bool,
    supersedes: Option<Hlc>,
    seal: Option<()>,
}

/// A replica summary with a frontier of plain pairs.
#[derive(Serialize)]
struct RawReplica {
    phase: ReplicaPhase,
    entries: u64,
    bytes: u64,
    frontier_digest: u64,
    frontier: Vec<(SiteId, u64)>,
    progress: Option<()>,
}

fn raw<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(codec::encode(value).unwrap())
}

fn raw_db(shards: u32, replication: u32, wall_ms: u64) -> String {
    let at = Hlc { wall_ms, logical: 0 };
    raw(&RawDb {
        shards,
        replication,
        retention: Retention::default(),
        routing: 0,
        created: at,
        origin: SiteId(9),
        changed: at,
        dropped: false,
        supersedes: None,
        seal: None,
    })
}

fn site_value(n: u8) -> String {
    encode_value(&SiteSummary {
        drain: None,
        role: Role::Core,
        addr: Label::truncated(&format!("127.0.0.1:{}", 7000 + u16::from(n))),
        version: Label::truncated("t"),
        started_ms: 0,
        zone: None,
        capacity: 100,
        leaving: false,
        draining: false,
        certificate_expires_ms: 0,
    })
}

fn node(n: u8, kv: Vec<(String, String)>) -> NodeInput {
    let mut key_values = vec![(SummaryKey::Site.render(), site_value(n))];
    key_values.extend(kv);
    NodeInput {
        site_id: SiteId(u128::from(n)),
        generation: 1,
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(n))),
        live: true,
        last_seen_ms: None,
        key_values,
        forged: Vec::new(),
        unverified: None,
    }
}

fn db_key(name: &str) -> String {
    SummaryKey::Db(DbName::new(name).unwrap()).render()
}

fn good_db(name: &str) -> (String, String) {
    let at = Hlc { wall_ms: NOW - 1000, logical: 0 };
    let summary = DbSummary {
        seal: None,
        settings: DbSettings::new(4, 2, Retention::default()).unwrap(),
        created: at,
        origin: SiteId(1),
        changed: at,
        dropped: false,
        supersedes: None,
    };
    (db_key(name), encode_value(&summary))
}

fn invalid(warnings: &[Warning], site: u8) -> Vec<(&str, &str)> {
    warnings
        .iter()
        .filter_map(|w| match w {
            Warning::Invalid { site_id, key, message } if *site_id == SiteId(u128::from(site)) => {
                Some((key.as_str(), message.as_str()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn out_of_range_settings_a_clock_far_ahead_and_a_seq_beyond_the_maximum_are_not_believed() {
    let hostile = node(
        2,
        vec![
            (db_key("huge"), raw_db(u32::MAX, 2, NOW)),
            (db_key("zero"), raw_db(4, 0, NOW)),
            (db_key("future"), raw_db(4, 2, NOW + 3_600_000)),
            (db_key("fine"), raw_db(4, 2, NOW + 30_000)),
            (
                SummaryKey::Replica(DbName::new("fine").unwrap(), 0).render(),
                raw(&RawReplica {
                    phase: ReplicaPhase::Ready,
                    entries: 1,
                    bytes: 1,
                    frontier_digest: 0,
                    frontier: vec![(SiteId(2), u64::MAX)],
                    progress: None,
                }),
            ),
        ],
    );
    let honest = node(1, vec![good_db("orders")]);
    let view = build_view(SiteId(1), &[honest, hostile], &ViewContext::at(NOW));
    let bad = invalid(&view.warnings, 2);
    let said = |key: &str, what: &str| bad.iter().any(|(k, m)| *k == key && m.contains(what));
    assert!(said("db:huge", "shards: 4294967295 is out of range"), "{bad:?}");
    assert!(said("db:zero", "replication: 0 is out of range"), "{bad:?}");
    assert!(said("db:future", "3600000 ms ahead"), "{bad:?}");
    assert!(said("r:fine:0", "above the maximum"), "{bad:?}");
    assert_eq!(bad.len(), 4, "{bad:?}");
    // None of it is in the view; 30 s ahead is within the drift and believed.
    let names: Vec<&str> = view.dbs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["fine", "orders"]);
    assert!(view.db(&DbName::new("fine").unwrap()).unwrap().placement[0].replicas.is_empty());
    // The drift is a setting.
    let strict = ViewContext {
        now_ms: NOW,
        limits: ViewLimits { max_clock_drift_ms: 10_000, ..ViewLimits::default() },
    };
    let view = build_view(SiteId(1), &[node(2, vec![(db_key("fine"), raw_db(4, 2, NOW + 30_000))])], &strict);
    assert!(view.dbs.is_empty());
    assert!(invalid(&view.warnings, 2)[0].1.contains("at most 10000 ms"));
}

#[test]
fn a_site_without_a_site_summary_and_a_key_listed_twice_are_left_out() {
    let mut anonymous = node(3, vec![good_db("orders")]);
    anonymous.key_values.remove(0);
    let mut twice = node(4, vec![good_db("a"), good_db("a")]);
    twice.key_values.push((SummaryKey::Site.render(), site_value(4)));
    let view = build_view(SiteId(4), &[anonymous, twice], &ViewContext::at(NOW));
    assert!(view.site(SiteId(3)).is_none(), "no summary, no site");
    assert!(view.db(&DbName::new("orders").unwrap()).is_none(), "nor anything it says");
    assert!(invalid(&view.warnings, 3)[0].1.contains("no readable site summary"));
    let repeated = invalid(&view.warnings, 4);
    assert_eq!(repeated.len(), 2, "{repeated:?}");
    assert!(repeated.iter().all(|(_, m)| m.contains("listed twice")));
    assert!(view.db(&DbName::new("a").unwrap()).is_some(), "the first value is kept");
}

#[test]
fn caps_on_sites_keys_and_dbs_keep_this_site_and_the_real_dbs() {
    let limits = ViewLimits { max_sites: 3, max_keys_per_site: 20, max_dbs: 2, ..ViewLimits::default() };
    let ctx = ViewContext { now_ms: NOW, limits };
    // Two honest sites hold "orders"; a third site invents 50 dbs.
    let invented: Vec<(String, String)> = (0..50).map(|i| good_db(&format!("a{i:02}"))).collect();
    let nodes = vec![
        node(1, vec![good_db("orders")]),
        node(2, vec![good_db("orders")]),
        node(5, invented),
        node(6, vec![]),
        node(7, vec![]),
    ];
    let view = build_view(SiteId(7), &nodes, &ctx);
    let sites: Vec<u128> = view.sites.iter().map(|s| s.site_id.0).collect();
    assert_eq!(sites, [1, 2, 7], "this site first, then by id");
    assert!(
        view.warnings
            .iter()
            .any(|w| matches!(w, Warning::Invalid { message, .. } if message.contains("5 sites")))
    );
    // Site 5 is not in the view at all now; with room for it, its keys are capped.
    let view = build_view(SiteId(1), &nodes[..3], &ctx);
    let capped = invalid(&view.warnings, 5);
    assert!(capped.iter().any(|(_, m)| m.contains("cap of 20 keys")), "{capped:?}");
    let names: Vec<&str> = view.dbs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"orders"), "the db two sites hold stays: {names:?}");
    assert!(view.warnings.iter().any(|w| matches!(w, Warning::Invalid { key, .. } if key == "db:*")));
}
