//! What other replicas have acknowledged holding, for writes that wait for `quorum` or
//! `all`.
//!
//! Each replica that follows this site's log writes back, on the pull stream, its
//! frontier whenever its log of the shard grows ([`cairn_transport::PullAck`]); [`AckBoard::record`]
//! keeps the highest per replica and wakes the writers waiting on that shard. A write is
//! held by a replica once that replica's frontier covers every id of the write
//! ([`holding`], pure).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cairn_inventory::{DbName, EntryId, Frontier, SiteId};
use tokio::sync::watch;

/// Per shard: each replica's acknowledged frontier, and a channel that ticks when one
/// grows.
#[derive(Debug, Default)]
pub struct AckBoard {
    shards: Mutex<HashMap<(DbName, u32), Shard>>,
}

#[derive(Debug)]
struct Shard {
    held: HashMap<SiteId, Frontier>,
    changed: watch::Sender<u64>,
}

impl Default for Shard {
    fn default() -> Self {
        Self { held: HashMap::new(), changed: watch::channel(0).0 }
    }
}

/// How many of `sites` hold every one of `ids`, by their acknowledged frontiers (a site
/// holds the entries it wrote itself: their origin stored them before answering).
pub fn holding(held: &HashMap<SiteId, Frontier>, sites: &[SiteId], ids: &[EntryId]) -> usize {
    let holds = |site: &SiteId, id: &EntryId| {
        id.origin == *site || held.get(site).is_some_and(|f| f.get(id.origin) >= id.seq)
    };
    sites.iter().filter(|site| ids.iter().all(|id| holds(site, id))).count()
}

impl AckBoard {
    /// Notes that `site` holds `frontier` of `(db, shard)` durably (frontiers only grow:
    /// per origin the higher seq is kept).
    pub fn record(&self, db: &DbName, shard: u32, site: SiteId, frontier: &Frontier) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = shards.entry((db.clone(), shard)).or_default();
        let held = entry.held.entry(site).or_default();
        for (origin, seq) in frontier.iter() {
            let at = held.0.entry(origin).or_default();
            *at = (*at).max(seq);
        }
        entry.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until at least `need` of `sites` hold every one of `ids`, or `timeout`
    /// passes. Answers whether they do.
    pub async fn wait(
        &self,
        db: &DbName,
        shard: u32,
        sites: &[SiteId],
        ids: &[EntryId],
        need: usize,
        timeout: Duration,
    ) -> bool {
        if need == 0 {
            return true;
        }
        let mut changed = {
            let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
            shards.entry((db.clone(), shard)).or_default().changed.subscribe()
        };
        let check = || {
            let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
            shards.get(&(db.clone(), shard)).is_some_and(|s| holding(&s.held, sites, ids) >= need)
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                changed.borrow_and_update();
                if check() {
                    return;
                }
                // The sender lives in the board as long as the board.
                let _ = changed.changed().await;
            }
        })
        .await;
        waited.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(u128, u64)]) -> Frontier {
        Frontier(pairs.iter().map(|(o, s)| (SiteId(*o), *s)).collect())
    }

    #[test]
    fn a_site_holds_a_write_when_its_frontier_covers_every_id() {
        let ids = [EntryId { origin: SiteId(1), seq: 5 }, EntryId { origin: SiteId(1), seq: 6 }];
        let held: HashMap<_, _> =
            [(SiteId(2), f(&[(1, 6)])), (SiteId(3), f(&[(1, 5)])), (SiteId(4), f(&[(9, 9)]))].into();
        let sites = [SiteId(2), SiteId(3), SiteId(4), SiteId(5)];
        assert_eq!(holding(&held, &sites, &ids), 1);
        assert_eq!(holding(&held, &sites[1..], &ids), 0);
        assert_eq!(holding(&held, &sites, &[]), 4, "an empty write is held by every site");
        let theirs = [EntryId { origin: SiteId(5), seq: 9 }];
        assert_eq!(holding(&held, &sites, &theirs), 1, "its origin holds an entry");
    }

    #[tokio::test]
    async fn a_waiting_write_is_woken_by_the_acknowledgement() {
        let board = std::sync::Arc::new(AckBoard::default());
        let db = DbName::new("d").unwrap();
        let ids = [EntryId { origin: SiteId(1), seq: 3 }];
        let waiter = {
            let (board, db) = (board.clone(), db.clone());
            tokio::spawn(async move {
                board.wait(&db, 0, &[SiteId(2), SiteId(3)], &ids, 2, Duration::from_secs(10)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        board.record(&db, 0, SiteId(2), &f(&[(1, 3)]));
        assert!(!waiter.is_finished());
        board.record(&db, 0, SiteId(3), &f(&[(1, 2)]));
        board.record(&db, 0, SiteId(3), &f(&[(1, 4)]));
        assert!(waiter.await.unwrap());
        assert!(!board.wait(&db, 1, &[SiteId(2)], &ids, 1, Duration::from_millis(20)).await, "times out");
    }
}
