//! Bounds on what one peer can cost a site: an [`Admission`] hands out [`Ticket`]s for
//! units of a resource (pull streams, reads in progress, bytes of batches in flight),
//! at most `per_peer` to any one peer and `total` to all; a ticket gives its units back
//! when dropped. Peers holding nothing are forgotten, so the table does not grow with
//! every address ever seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// A bounded resource shared by peers.
#[derive(Debug)]
pub struct Admission {
    what: &'static str,
    per_peer: usize,
    total: usize,
    held: Mutex<Held>,
    released: Notify,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_peer: HashMap<SocketAddr, usize>,
}

/// Units of an [`Admission`] held by one peer; given back on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    peer: SocketAddr,
    units: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.admission.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(self.units);
        if let Some(n) = held.by_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(self.units);
            if *n == 0 {
                held.by_peer.remove(&self.peer);
            }
        }
        drop(held);
        self.admission.released.notify_waiters();
    }
}

impl Ticket {
    /// Gives back all but `units` (once what was taken for is known to need less).
    pub fn shrink_to(&mut self, units: usize) {
        if units >= self.units {
            return;
        }
        let back = self.units - units;
        let mut held = self.admission.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(back);
        if let Some(n) = held.by_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(back);
        }
        drop(held);
        self.units = units;
        self.admission.released.notify_waiters();
    }
}

impl Admission {
    /// At most `per_peer` units to one peer and `total` to all, of `what` (for messages).
    pub fn new(what: &'static str, per_peer: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { what, per_peer, total, held: Mutex::default(), released: Notify::new() })
    }

    /// `units` for `peer` now, or why not. A request for more than a peer may ever hold
    /// is cut to that, so it can always be served alone.
    pub fn try_take(self: &Arc<Self>, peer: SocketAddr, units: usize) -> Result<Ticket, String> {
        let units = units.min(self.per_peer).min(self.total);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.by_peer.get(&peer).copied().unwrap_or(0);
        if mine + units > self.per_peer {
            return Err(format!("{peer} already holds {mine} of its {} {}", self.per_peer, self.what));
        }
        if held.total + units > self.total {
            return Err(format!("all {} {} of this site are taken", self.total, self.what));
        }
        held.total += units;
        *held.by_peer.entry(peer).or_default() += units;
        Ok(Ticket { admission: self.clone(), peer, units })
    }

    /// `units` for `peer`, waiting until they are free.
    pub async fn take(self: &Arc<Self>, peer: SocketAddr, units: usize) -> Ticket {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Ok(ticket) = self.try_take(peer, units) {
                return ticket;
            }
            released.await;
        }
    }

    /// Peers holding something now.
    pub fn peers(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).by_peer.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn caps_per_peer_and_in_all_and_forgets_idle_peers() {
        let a = Admission::new("streams", 2, 3);
        let t1 = a.try_take(peer(1), 1).unwrap();
        let t2 = a.try_take(peer(1), 1).unwrap();
        let refused = a.try_take(peer(1), 1).unwrap_err();
        assert!(refused.contains("already holds 2 of its 2 streams"), "{refused}");
        let t3 = a.try_take(peer(2), 1).unwrap();
        assert!(a.try_take(peer(3), 1).unwrap_err().contains("all 3 streams"));
        drop((t1, t2));
        assert_eq!(a.peers(), 1, "a peer holding nothing is forgotten");
        let mut big = a.try_take(peer(5), 2).unwrap();
        assert!(a.try_take(peer(6), 1).is_err());
        big.shrink_to(1);
        let freed = a.try_take(peer(6), 1).unwrap();
        drop((big, freed));
        drop(t3);
        assert_eq!(a.peers(), 0);
        // Asking for more than a peer may hold takes what it may.
        let big = a.try_take(peer(4), 100).unwrap();
        assert_eq!(big.units, 2);
    }

    #[tokio::test]
    async fn take_waits_for_units_to_come_back() {
        let a = Admission::new("bytes", 10, 10);
        let held = a.try_take(peer(1), 8).unwrap();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.take(peer(2), 5).await.units }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap(), 5);
    }
}
