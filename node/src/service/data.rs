//! The data-plane requests: writes with topics and acknowledgement levels, reads by
//! position and filter (long-polled), and routes.

use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use cairn_gossip::ClusterView;
use cairn_inventory::{DbName, FetchLimits, FetchQuery, InventoryError, Message, SiteId};
use cairn_transport::{Ack, FetchRequest, Request, Response, Routes, WireError, WireErrorKind, WriteRequest};

use super::{SiteService, internal};
use crate::data::access;

/// The longest a fetch may wait for new entries.
pub(crate) const MAX_WAIT_MS: u32 = 60_000;
/// The longest a write may wait for its acknowledgements.
pub(crate) const MAX_ACK_TIMEOUT_MS: u32 = 60_000;
/// Entries one fetch looks at, matched or not, before it answers.
const MAX_SCANNED: usize = 65_536;

/// The replicas other than `me` whose acknowledgements count for `ack`, and how many
/// of them must hold a write (pure). `quorum` is a majority of the db's replication
/// factor counting this site; `all`, every other ready replica the view shows.
pub(crate) fn ack_targets(
    view: &ClusterView,
    me: SiteId,
    db: &DbName,
    shard: u32,
    ack: Ack,
) -> (Vec<SiteId>, usize) {
    let Some(d) = view.db(db) else { return (Vec::new(), usize::from(ack != Ack::Local)) };
    let others: Vec<SiteId> = d
        .placement
        .get(shard as usize)
        .map(|p| p.replicas.iter().filter(|r| r.is_ready() && r.site_id != me).map(|r| r.site_id).collect())
        .unwrap_or_default();
    let need = match ack {
        Ack::Local => 0,
        Ack::Quorum => d.record().settings.replication.majority().saturating_sub(1) as usize,
        Ack::All => others.len(),
    };
    (others, need)
}

/// Checks a write's messages before anything is stored.
pub(crate) fn check_messages(messages: &[Message]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("nothing to write: no messages".into());
    }
    if messages.len() > access::MAX_PUBLISH_MESSAGES {
        return Err(format!(
            "{} messages in one write; at most {}",
            messages.len(),
            access::MAX_PUBLISH_MESSAGES
        ));
    }
    if let Some((i, m)) =
        messages.iter().enumerate().find(|(_, m)| m.payload.len() > cairn_inventory::MAX_PAYLOAD)
    {
        return Err(format!(
            "message {i} has {} bytes; at most {}",
            m.payload.len(),
            cairn_inventory::MAX_PAYLOAD
        ));
    }
    Ok(())
}

impl SiteService {
    pub(super) async fn write(&self, peer: SocketAddr, write: WriteRequest) -> Response {
        if let Err(reason) = check_messages(&write.messages) {
            return Response::Rejected { reason };
        }
        if self.role == cairn_inventory::Role::Replicant {
            let (db, shard) = (write.db.clone(), write.shard);
            return self.forward(&db, shard, Request::Write(write)).await;
        }
        let WriteRequest { db, shard, messages, producer, ack, ack_timeout_ms } = write;
        let _wait = match ack {
            Ack::Local => None,
            _ => match self.data.waits.try_take(peer, 1) {
                Ok(ticket) => Some(ticket),
                Err(why) => return busy(format!("too many writes waiting: {why}")),
            },
        };
        let stored = match self.appender.append(db.clone(), shard, messages, producer).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(state)) => {
                return self.not_here(&db, shard, access::not_writable(&db, shard, state.as_ref()));
            }
            Err(error) => return write_failed(&db, shard, &error),
        };
        self.data.signals.notify(&db, shard);
        if ack == Ack::Local {
            return Response::Written { ids: stored };
        }
        let me = self.inventory.identity().site_id;
        let Some(view) = self.current_view() else {
            return outcome_unknown("gossip is starting: no replica is known to acknowledge".into());
        };
        let (sites, need) = ack_targets(&view, me, &db, shard, ack);
        let ids: Vec<_> = stored.iter().map(|s| s.id).collect();
        let timeout = Duration::from_millis(u64::from(ack_timeout_ms.clamp(1, MAX_ACK_TIMEOUT_MS)));
        if self.data.acks.wait(&db, shard, &sites, &ids, need, timeout).await {
            Response::Written { ids: stored }
        } else {
            outcome_unknown(format!(
                "stored at this site, but not {need} of the other replicas of {db}/{shard} acknowledged it within {timeout:?}; \
                 it may or may not be held as durably as asked (retry with the same producer numbers)"
            ))
        }
    }

    /// A replicant's write: done by a core site holding a ready replica.
    pub(super) async fn forward(&self, db: &DbName, shard: u32, request: Request) -> Response {
        let me = self.inventory.identity().site_id;
        let holders =
            self.current_view().map(|v| access::ready_holders(&v, me, db, shard)).unwrap_or_default();
        let endpoint = self.endpoint.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(endpoint) = endpoint else {
            return busy("the site is starting or stopping and cannot forward writes now; try again".into());
        };
        let first = self.forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = crate::data::forward::forward(&endpoint, &holders, first, &request).await;
        if let Response::Error(error) = &answer {
            tracing::warn!(%db, shard, %error, "forwarding a write failed");
        }
        answer
    }

    pub(super) async fn fetch(&self, peer: SocketAddr, fetch: FetchRequest) -> Response {
        let deadline = Instant::now() + Duration::from_millis(u64::from(fetch.wait_ms.min(MAX_WAIT_MS)));
        let (db, shard) = (fetch.db.clone(), fetch.shard);
        // Subscribed before the first read, so an entry stored between a read and the
        // wait is not missed.
        let mut grew = self.data.signals.subscribe(&db, shard);
        // A fetch that may wait counts among the waits, and waits its turn for a read
        // (a reader long-polling every shard at once sends them together).
        let waiting = match fetch.wait_ms {
            0 => None,
            _ => match self.data.waits.try_take(peer, 1) {
                Ok(ticket) => Some(ticket),
                Err(why) => return busy(format!("too many reads waiting: {why}")),
            },
        };
        loop {
            grew.borrow_and_update();
            let answer = self.fetch_once(peer, &fetch, waiting.is_some()).await;
            let empty =
                matches!(&answer, Response::Fetched { entries, more: false, .. } if entries.is_empty());
            if !empty || Instant::now() >= deadline {
                return answer;
            }
            let wait = tokio::time::timeout_at(deadline.into(), grew.changed()).await;
            if matches!(wait, Ok(Err(_))) {
                return answer;
            }
        }
    }

    pub(super) async fn fetch_once(&self, peer: SocketAddr, fetch: &FetchRequest, patient: bool) -> Response {
        let _ticket = match patient {
            true => self.data.reads.take(peer, 1).await,
            false => match self.data.reads.try_take(peer, 1) {
                Ok(ticket) => ticket,
                Err(why) => return busy(format!("too many reads: {why}")),
            },
        };
        let request = fetch.clone();
        let result = self
            .blocking(move |inv| {
                let FetchRequest { db, shard, start, filter, since_ms, max_entries, .. } = &request;
                if let Err(reason) = access::readable(inv, db, *shard)? {
                    return Ok(Err(reason));
                }
                let query = FetchQuery { start, filter, since_ms: *since_ms };
                let limits = FetchLimits {
                    max_entries: (*max_entries).clamp(1, access::MAX_READ_ENTRIES) as usize,
                    max_bytes: access::MAX_READ_BYTES,
                    max_scanned: MAX_SCANNED,
                };
                Ok(Ok(inv.fetch(db, *shard, query, limits)?))
            })
            .await;
        match result {
            Ok(Ok(Ok(fetched))) => {
                Response::Fetched { entries: fetched.entries, cursor: fetched.cursor, more: fetched.more }
            }
            Ok(Ok(Err(out_of_range))) => Response::OutOfRange(out_of_range),
            Ok(Err(reason)) => self.not_here(&fetch.db, fetch.shard, reason),
            Err(error) => internal(&error),
        }
    }

    pub(super) fn routes(&self, db: &DbName) -> Response {
        let Some(view) = self.current_view() else { return busy("gossip is starting; try again".into()) };
        let Some(d) = view.db(db) else { return super::unknown_db(db) };
        let holders = d
            .placement
            .iter()
            .map(|p| {
                p.replicas
                    .iter()
                    .filter(|r| r.is_ready() && view.is_live(r.site_id))
                    .filter_map(|r| view.site(r.site_id)?.addr.parse().ok())
                    .collect()
            })
            .collect();
        Response::Routes(Routes { settings: d.record().settings, holders })
    }
}

fn busy(why: String) -> Response {
    Response::Error(WireError::new(WireErrorKind::Busy, why))
}

fn outcome_unknown(why: String) -> Response {
    Response::Error(WireError::new(WireErrorKind::OutcomeUnknown, why))
}

pub(super) fn write_failed(db: &DbName, shard: u32, error: &InventoryError) -> Response {
    match error {
        InventoryError::NoSpace { .. } | InventoryError::MapFull { .. } => {
            tracing::warn!(%db, shard, %error, "write refused");
            Response::Rejected { reason: error.to_string() }
        }
        other => internal(other),
    }
}
