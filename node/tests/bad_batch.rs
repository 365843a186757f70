//! A corrupted batch is refused and fetched again. The upstream is a test double that
//! joins the cluster for real (QUIC endpoint, gossip) and serves the pull protocol, but
//! breaks the CRC of one batch; the receiver is a real site.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_gossip::summary::{ReplicaPhase, ReplicaSummary, SiteSummary};
use cairn_gossip::{Gossip, GossipConfig, QuicCarriage, SiteSnapshot};
use cairn_inventory::{
    DbName, DbRecord, DbSettings, Entry, EntryId, Frontier, Hlc, Plan, PlanId, PlanOrigin, ReplicaState,
    Retention, Role, SiteId, Step, now_ms,
};
use cairn_node::site::{Site, SiteOptions};
use cairn_transport::{
    Endpoint, PullFrame, PullRequest, PullSender, PullStart, Request, Response, SealedBatch, Service,
    TransportConfig, tls,
};

const UPSTREAM: SiteId = SiteId(0xfa17);
const ENTRIES: u64 = 1000;
const BATCH: usize = 100;

/// Serves the entries `UPSTREAM/1..=ENTRIES`; the first stream's second batch has a
/// wrong CRC. Records each pull's frontier and cursor.
struct FaultyUpstream {
    entries: Vec<Entry>,
    pulls: Mutex<Vec<(Frontier, u64)>>,
    corrupted: AtomicBool,
}

impl Service for FaultyUpstream {
    async fn handle(&self, _peer: cairn_transport::Peer, _request: Request) -> Response {
        Response::Rejected { reason: "test upstream".into() }
    }

    async fn pull(&self, _peer: cairn_transport::Peer, request: PullRequest, mut out: PullSender) {
        self.pulls.lock().unwrap().push((request.frontier.clone(), request.cursor));
        let start = PullStart {
            site: UPSTREAM,
            frontier: Frontier([(UPSTREAM, ENTRIES)].into()),
            next_arrival: ENTRIES,
            entries: ENTRIES,
            bytes: self.entries.iter().map(|e| e.payload.len() as u64).sum(),
        };
        if out.send(&PullFrame::Start(start)).await.is_err() {
            return;
        }
        let from = request.cursor as usize;
        for (i, chunk) in self.entries[from.min(self.entries.len())..].chunks(BATCH).enumerate() {
            let next = (from + i * BATCH + chunk.len()) as u64;
            let mut batch = SealedBatch::seal(chunk, next).unwrap();
            if i == 1 && !self.corrupted.swap(true, Ordering::SeqCst) {
                batch.crc32c ^= 0x5a5a;
            }
            if out.send(&PullFrame::Batch(batch)).await.is_err() {
                return;
            }
        }
        out.stopped().await;
    }
}

fn db(cluster: &std::path::Path) -> DbRecord {
    let settings = DbSettings::new(1, 2, Retention::default()).expect("settings in range");
    let record =
        DbRecord::new(DbName::new("crc").unwrap(), settings, Hlc { wall_ms: 1, logical: 0 }, UPSTREAM);
    cairn_tests::sealed(cluster, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_batch_is_refused_and_fetched_again() {
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");
    tls::init_cluster_dir(&cluster).unwrap();
    let ca = tls::ClusterCa::load(&cluster).unwrap();
    let creds =
        tls::Credentials::from_pem(ca.cert_pem(), &ca.issue(&tls::Identity::Site(UPSTREAM), 1).unwrap())
            .unwrap();

    let entries: Vec<Entry> = (1..=ENTRIES)
        .map(|seq| Entry::plain(EntryId { origin: UPSTREAM, seq }, seq, vec![seq as u8; 50]))
        .collect();
    let upstream = Arc::new(FaultyUpstream {
        entries: entries.clone(),
        pulls: Mutex::default(),
        corrupted: AtomicBool::new(false),
    });
    let (endpoint, inbox) =
        Endpoint::serve("127.0.0.1:0".parse().unwrap(), &creds, TransportConfig::default(), upstream.clone())
            .unwrap();
    let upstream_addr = endpoint.local_addr();
    let snapshot = SiteSnapshot {
        revocations: None,
        site: SiteSummary {
            drain: None,
            role: Role::Core,
            addr: cairn_gossip::summary::Label::truncated(&upstream_addr.to_string()),
            version: cairn_gossip::summary::Label::truncated("test"),
            started_ms: now_ms(),
            zone: None,
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
        },
        dbs: vec![db(&cluster)],
        replicas: vec![(
            db(&cluster).name,
            0,
            ReplicaSummary {
                phase: ReplicaPhase::Ready,
                entries: ENTRIES,
                bytes: ENTRIES * 50,
                frontier_digest: 0,
                frontier: Frontier([(UPSTREAM, ENTRIES)].into()),
                progress: None,
            },
        )],
        plans: vec![],
    };
    let gossip_config = GossipConfig { interval: Duration::from_millis(100), ..GossipConfig::default() };
    let carriage = QuicCarriage::new(endpoint.clone(), inbox);
    let keys = Arc::new(cairn_gossip::signed::SigningKeys::new(creds.signer().unwrap()));
    let gossip = Gossip::start(
        UPSTREAM,
        creds.cluster_id(),
        upstream_addr,
        &carriage,
        gossip_config,
        &snapshot,
        keys,
        creds.trust().unwrap(),
    )
    .await
    .unwrap();

    let mut options = {
        let data_dir = root.path().join("site");
        cairn_node::credentials::issue_site_from_dir(&cluster, &data_dir, Role::Core).unwrap();
        SiteOptions::new(data_dir, "127.0.0.1:0".parse().unwrap())
    };
    options.gossip.interval = Duration::from_millis(100);
    options.gossip.seeds = vec![upstream_addr.to_string()];
    // The test adds the replica itself.
    options.auto_repair = false;
    options.auto_rebalance = false;
    let site = Site::start(options).await.unwrap();
    let name = db(&cluster).name;
    let plan = Plan {
        db: name.clone(),
        plan_id: PlanId(7),
        priority: 100,
        origin: PlanOrigin::Operator { via: UPSTREAM },
        steps: vec![Step::AddReplica { shard: 0, upstreams: vec![UPSTREAM] }],
    };
    site.inventory.offer(&plan).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while site.inventory.replica(&name, 0).unwrap().map(|r| r.state) != Some(ReplicaState::Ready) {
        assert!(tokio::time::Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pulls = upstream.pulls.lock().unwrap().clone();
    // First pull from nothing; the second asks again from the end of the first good
    // batch: nothing of the bad batch was kept.
    assert_eq!(pulls[0], (Frontier::default(), 0));
    assert_eq!(pulls[1], (Frontier([(UPSTREAM, BATCH as u64)].into()), BATCH as u64), "{pulls:?}");
    let got = site.inventory.read_log(&name, 0, 0, usize::MAX).unwrap();
    let got: Vec<Entry> = got.entries.into_iter().map(|e| e.entry).collect();
    assert_eq!(got, entries, "every entry once, in order");
    let status = site.endpoint.request(site.endpoint.local_addr(), &Request::Status).await.unwrap();
    let Response::Status(status) = status else { panic!("{status:?}") };
    assert_eq!(status.data.refused_batches, 1);
    site.shutdown().await;
    gossip.shutdown().await;
    endpoint.close().await;
}
