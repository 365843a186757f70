//! Outgoing connections, one per peer, re-established with backoff.
//!
//! Each peer has its own async lock, so a slow or dead peer only delays requests to that
//! peer: connecting is bounded by the connect timeout, and after a failure the peer is
//! skipped (an immediate [`TransportError::Backoff`]) until its backoff has passed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::stats::Stats;
use crate::tls::SERVER_NAME;

/// Connections replaced by a newer one are kept open (dropping quinn's last handle
/// closes a connection, which the peer may still be using) until they close, up to this
/// many per peer.
const MAX_SPARE: usize = 4;
/// Peers with no open connection are forgotten once unused this long…
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// …when the pool holds more than this many peers (looked at once a minute at most).
const PRUNE_ABOVE: usize = 64;

#[derive(Debug, Default)]
struct PeerSlot {
    /// The connection requests to this peer use: the newest one, ours or theirs.
    conn: Option<quinn::Connection>,
    /// Older connections, kept open for the peer.
    spare: Vec<quinn::Connection>,
    failures: u32,
    retry_at: Option<Instant>,
    /// When the last attempt failed (gossip redials on its own, shorter cadence).
    failed_at: Option<Instant>,
    last_error: String,
    /// When a request last asked for this peer.
    last_used: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Pool {
    peers: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<PeerSlot>>>>,
    last_prune: Mutex<Option<Instant>>,
    /// Per peer, what came back on its connection (see [`Pool::stalled`]).
    answers: Mutex<HashMap<SocketAddr, Answers>>,
}

/// Most peers whose answers are watched; beyond, the watch starts afresh.
const MAX_WATCHED: usize = 4096;

/// Who asks for a connection: requests wait out the full backoff after a failed
/// attempt; gossip dials again after at most `TransportConfig::gossip_redial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    /// A request (skipped at once while the peer is in backoff).
    Request,
    /// A gossip message.
    Gossip,
}

/// What came back on one connection: how many datagrams, and since when something we
/// sent has had no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answers {
    conn: usize,
    datagrams: u64,
    waiting_since: Instant,
}

impl Answers {
    /// Notes a send on connection `conn`, which has received `datagrams` so far, at
    /// `now`; answers whether it has stalled: nothing came back for `after` since the
    /// first send that is still unanswered. Pure, so it is tested without a network.
    pub(crate) fn note_send(
        seen: &mut Option<Self>,
        conn: usize,
        datagrams: u64,
        now: Instant,
        after: Duration,
    ) -> bool {
        match seen {
            Some(s) if s.conn == conn && s.datagrams == datagrams => {
                now.duration_since(s.waiting_since) > after
            }
            _ => {
                *seen = Some(Self { conn, datagrams, waiting_since: now });
                false
            }
        }
    }
}

impl Pool {
    /// Whether the pooled connection `conn` to `peer` has stalled, noting a send on it
    /// now (see [`Answers::note_send`]).
    pub(crate) fn stalled(&self, peer: SocketAddr, conn: &quinn::Connection, after: Duration) -> bool {
        let datagrams = conn.stats().udp_rx.datagrams;
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= MAX_WATCHED && !answers.contains_key(&peer) {
            answers.clear();
        }
        let mut seen = answers.get(&peer).copied();
        let stalled = Answers::note_send(&mut seen, conn.stable_id(), datagrams, Instant::now(), after);
        if let Some(seen) = seen {
            answers.insert(peer, seen);
        }
        stalled
    }

    /// The live connection to `peer`, if there is one and nobody holds its slot (a
    /// dial under way), noted as used now. Does not wait.
    pub(crate) fn ready(&self, peer: SocketAddr) -> Option<quinn::Connection> {
        let slot = self.peers.lock().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned()?;
        let mut slot = slot.try_lock().ok()?;
        let conn = slot.conn.clone().filter(|c| c.close_reason().is_none())?;
        slot.last_used = Some(Instant::now());
        Some(conn)
    }

    /// A live connection to `peer`, made now if needed; `true` if it was just made.
    pub(crate) async fn connection(
        &self,
        endpoint: &quinn::Endpoint,
        client: quinn::ClientConfig,
        config: &TransportConfig,
        stats: &Stats,
        peer: SocketAddr,
        dial: Dial,
    ) -> Result<(quinn::Connection, bool), TransportError> {
        self.prune();
        let slot = self.peers.lock().unwrap_or_else(PoisonError::into_inner).entry(peer).or_default().clone();
        let mut slot = slot.lock().await;
        slot.last_used = Some(Instant::now());
        if let Some(conn) = &slot.conn {
            if conn.close_reason().is_none() {
                return Ok((conn.clone(), false));
            }
            slot.conn = None;
        }
        let now = Instant::now();
        let retry_at = match dial {
            Dial::Request => slot.retry_at,
            Dial::Gossip => slot.retry_at.min(slot.failed_at.map(|at| at + config.gossip_redial)),
        };
        if let Some(at) = retry_at.filter(|at| *at > now) {
            return Err(TransportError::Backoff {
                peer,
                last_error: slot.last_error.clone(),
                retry_in: at - now,
            });
        }
        let attempt = async {
            let connecting = endpoint
                .connect_with(client, peer, SERVER_NAME)
                .map_err(|e| TransportError::Unreachable { peer, reason: e.to_string() })?;
            connecting.await.map_err(|e| TransportError::Unreachable { peer, reason: e.to_string() })
        };
        let result = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Unreachable {
                peer,
                reason: format!("no handshake within {:?}", config.connect_timeout),
            }),
        };
        match result {
            Ok(conn) => {
                Stats::bump(&stats.handshakes_ok);
                slot.use_newest(conn.clone());
                Ok((conn, true))
            }
            Err(err) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = backoff(config, slot.failures);
                slot.failed_at = Some(Instant::now());
                slot.retry_at = Some(Instant::now() + backoff);
                slot.last_error = err.to_string();
                tracing::debug!(%peer, failures = slot.failures, ?backoff, error = %err, "connect failed");
                Err(err)
            }
        }
    }

    /// Uses a connection the peer opened to us for our requests to it too. A peer that
    /// restarted on the same address reaches us with a new connection before our old
    /// one to it times out; without this, our messages to it would go down the dead one.
    pub(crate) async fn adopt(&self, peer: SocketAddr, conn: &quinn::Connection) {
        let slot = self.peers.lock().unwrap_or_else(PoisonError::into_inner).entry(peer).or_default().clone();
        slot.lock().await.use_newest(conn.clone());
    }

    /// Forgets a connection that broke, so the next request reconnects at once.
    /// Drops whatever connection is pooled for `peer` (after a request to it timed out:
    /// the peer may have restarted and the old connection may never answer again).
    pub(crate) fn forget_peer(&self, peer: SocketAddr) {
        let slot = self.peers.lock().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned();
        if let Some(slot) = slot
            && let Ok(mut slot) = slot.try_lock()
        {
            slot.conn = None;
        }
    }

    /// Forgets peers that have no open connection and were not used for a while (a site
    /// that left, an address that changed), once a minute at most and only when the pool
    /// holds many.
    fn prune(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_prune.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
                return;
            }
            if self.peers.lock().unwrap_or_else(PoisonError::into_inner).len() <= PRUNE_ABOVE {
                return;
            }
            *last = Some(now);
        }
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|_, slot| {
            // A slot someone is using (locked, or held elsewhere) stays.
            let Ok(slot) = slot.try_lock() else { return true };
            let open = slot.conn.as_ref().is_some_and(|c| c.close_reason().is_none())
                || slot.spare.iter().any(|c| c.close_reason().is_none());
            open || slot.last_used.is_some_and(|at| now.duration_since(at) < FORGET_AFTER)
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub(crate) fn forget(&self, peer: SocketAddr, conn: &quinn::Connection) {
        let slot = self.peers.lock().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned();
        if let Some(slot) = slot
            && let Ok(mut slot) = slot.try_lock()
            && slot.conn.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            slot.conn = None;
        }
    }
}

impl PeerSlot {
    /// Makes `conn` the connection to use; the previous one becomes a spare.
    fn use_newest(&mut self, conn: quinn::Connection) {
        if let Some(old) = self.conn.take()
            && old.stable_id() != conn.stable_id()
        {
            self.spare.push(old);
        }
        self.spare.retain(|c| c.close_reason().is_none());
        if self.spare.len() > MAX_SPARE {
            self.spare.remove(0);
        }
        self.conn = Some(conn);
        self.failures = 0;
        self.retry_at = None;
        self.failed_at = None;
        self.last_error.clear();
    }
}

/// The wait after `failures` failed attempts in a row.
fn backoff(config: &TransportConfig, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    config.reconnect_backoff.saturating_mul(factor).min(config.max_reconnect_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_peers_without_connections_are_forgotten() {
        let pool = Pool::default();
        let long_ago = Instant::now().checked_sub(FORGET_AFTER * 2);
        for port in 0..100u16 {
            let slot = PeerSlot {
                last_used: if port < 90 { long_ago } else { Some(Instant::now()) },
                ..PeerSlot::default()
            };
            pool.peers
                .lock()
                .unwrap()
                .insert(SocketAddr::from(([127, 0, 0, 1], port)), Arc::new(tokio::sync::Mutex::new(slot)));
        }
        pool.prune();
        assert_eq!(pool.len(), 10, "the 90 idle ones are gone");
        // Not again within the minute.
        pool.peers.lock().unwrap().insert(SocketAddr::from(([127, 0, 0, 2], 1)), Arc::default());
        pool.prune();
        assert_eq!(pool.len(), 11);
    }

    #[test]
    fn a_connection_stalls_when_nothing_comes_back_for_a_while_after_a_send() {
        let t0 = Instant::now();
        let after = Duration::from_secs(2);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut seen = None;
        // Answers keep coming: never stalled, however long the connection lives.
        for (i, ms) in (0..100u64).map(|i| (i, i * 100)) {
            assert!(!Answers::note_send(&mut seen, 1, i, at(ms), after));
        }
        // A cut: the datagram count stops moving; stalled once 2 s passed since the first
        // unanswered send.
        assert!(!Answers::note_send(&mut seen, 1, 99, at(10_000), after));
        assert!(!Answers::note_send(&mut seen, 1, 99, at(11_900), after));
        assert!(Answers::note_send(&mut seen, 1, 99, at(12_100), after));
        // A new connection starts its own watch.
        assert!(!Answers::note_send(&mut seen, 2, 0, at(12_200), after));
        // A quiet connection is not stalled: the first send after a silence starts the
        // wait, and the answer to it ends it.
        assert!(!Answers::note_send(&mut seen, 2, 5, at(60_000), after));
        assert!(!Answers::note_send(&mut seen, 2, 6, at(63_000), after));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = TransportConfig::default();
        let waits: Vec<_> = (1..=8).map(|f| backoff(&config, f).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(&config, u32::MAX), config.max_reconnect_backoff);
    }
}
