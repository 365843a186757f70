//! chitchat's transport over the site's QUIC endpoint, so gossip is authenticated and
//! encrypted by the cluster's mutual TLS like every other byte.
//!
//! chitchat 0.13 keeps the wire encoding of its messages private, so the carriage lets
//! chitchat's own UDP socket do the encoding and relays the bytes:
//!
//! ```text
//! chitchat ─UdpSocket(127.0.0.1:a)─▶ relay socket for peer P (127.0.0.1:r_P) ─QUIC─▶ P
//! P ─QUIC─▶ inbox ─▶ relay socket for P ─UDP─▶ 127.0.0.1:a ─▶ chitchat (from r_P → P)
//! ```
//!
//! One relay socket per peer, on loopback; each accepts datagrams only from chitchat's
//! socket, and chitchat's socket accepts only relay addresses (anything else local is
//! dropped). Sending never waits for a peer: the endpoint queues the message or drops it,
//! and gossip's anti-entropy makes up for what is lost. A relay that carried nothing for
//! ten minutes (a peer that left, an address that changed) is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use cairn_transport::{Endpoint, GossipInbox};
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp};
use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinSet};

/// Largest datagram chitchat sends.
const MAX_DATAGRAM: usize = 65_507;

/// A chitchat [`Transport`] over a site's endpoint. It can be opened once.
#[derive(Debug)]
pub struct QuicCarriage {
    endpoint: Endpoint,
    inbox: Mutex<Option<GossipInbox>>,
    counters: Arc<GossipCounters>,
}

impl QuicCarriage {
    /// Gossip through `endpoint`, receiving from its `inbox`.
    pub fn new(endpoint: Endpoint, inbox: GossipInbox) -> Self {
        Self { endpoint, inbox: Mutex::new(Some(inbox)), counters: Arc::default() }
    }

    /// What this carriage has sent and received so far (shared, live).
    pub fn counters(&self) -> Arc<GossipCounters> {
        self.counters.clone()
    }
}

/// Gossip messages and bytes a site sent and received, since it started.
#[derive(Debug, Default)]
pub struct GossipCounters {
    /// Messages sent to peers.
    pub messages_sent: AtomicU64,
    /// Bytes of those messages.
    pub bytes_sent: AtomicU64,
    /// Messages received from peers.
    pub messages_received: AtomicU64,
    /// Bytes of those messages.
    pub bytes_received: AtomicU64,
}

impl GossipCounters {
    fn count(messages: &AtomicU64, bytes: &AtomicU64, len: usize) {
        messages.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// A relay closed after carrying nothing for this long…
const RELAY_IDLE: Duration = Duration::from_secs(600);
/// …looked for once a minute, when there are more relays than this.
const PRUNE_ABOVE: usize = 64;

/// One peer's relay socket, its forwarding task and when it last carried a datagram.
struct Relay {
    socket: Arc<UdpSocket>,
    task: AbortHandle,
    used: Instant,
}

/// The relay sockets, by peer and by local address.
#[derive(Default)]
struct Relays {
    by_peer: HashMap<SocketAddr, Relay>,
    by_local: HashMap<SocketAddr, SocketAddr>,
    last_prune: Option<Instant>,
}

impl Relays {
    /// Closes relays idle for [`RELAY_IDLE`], once a minute at most, when there are many.
    fn prune(&mut self, now: Instant) {
        if self.by_peer.len() <= PRUNE_ABOVE
            || self.last_prune.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.last_prune = Some(now);
        let idle: Vec<SocketAddr> = self
            .by_peer
            .iter()
            .filter(|(_, r)| now.duration_since(r.used) > RELAY_IDLE)
            .map(|(p, _)| *p)
            .collect();
        for peer in idle {
            if let Some(relay) = self.by_peer.remove(&peer) {
                relay.task.abort();
                if let Ok(local) = relay.socket.local_addr() {
                    self.by_local.remove(&local);
                }
            }
        }
    }
}

struct Shared {
    endpoint: Endpoint,
    counters: Arc<GossipCounters>,
    /// chitchat's own socket address.
    inner_addr: SocketAddr,
    relays: Mutex<Relays>,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    /// The relay socket for `peer`, made (with its forwarding task) on first use.
    async fn relay(self: &Arc<Self>, peer: SocketAddr) -> anyhow::Result<Arc<UdpSocket>> {
        if let Some(socket) = self.used(peer) {
            return Ok(socket);
        }
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.context("binding a gossip relay socket")?);
        let local = socket.local_addr()?;
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = relays.by_peer.get_mut(&peer) {
            existing.used = Instant::now();
            return Ok(existing.socket.clone());
        }
        relays.prune(Instant::now());
        let (shared, relay) = (self.clone(), socket.clone());
        let task = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = relay.recv_from(&mut buf).await {
                if from == shared.inner_addr {
                    let c = &shared.counters;
                    GossipCounters::count(&c.messages_sent, &c.bytes_sent, n);
                    shared.used(peer);
                    shared.endpoint.send_gossip(peer, buf[..n].to_vec());
                }
            }
        });
        relays.by_peer.insert(peer, Relay { socket: socket.clone(), task, used: Instant::now() });
        relays.by_local.insert(local, peer);
        Ok(socket)
    }

    /// `peer`'s relay socket, if it has one, marked as used now.
    fn used(&self, peer: SocketAddr) -> Option<Arc<UdpSocket>> {
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        let relay = relays.by_peer.get_mut(&peer)?;
        relay.used = Instant::now();
        Some(relay.socket.clone())
    }

    fn peer_of(&self, relay: SocketAddr) -> Option<SocketAddr> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner).by_local.get(&relay).copied()
    }
}

#[async_trait]
impl Transport for QuicCarriage {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let mut inbox = self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .context("the QUIC gossip carriage was already opened")?;
        let inner = ChitchatUdp::open("127.0.0.1:0".parse()?).await?;
        let shared = Arc::new(Shared {
            endpoint: self.endpoint.clone(),
            counters: self.counters.clone(),
            inner_addr: inner.local_addr()?,
            relays: Mutex::new(Relays::default()),
            tasks: Mutex::new(JoinSet::new()),
        });
        // Messages from peers go to chitchat through the peer's relay socket.
        let incoming = shared.clone();
        shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).spawn(async move {
            while let Some((peer, bytes)) = inbox.0.recv().await {
                let c = &incoming.counters;
                GossipCounters::count(&c.messages_received, &c.bytes_received, bytes.len());
                match incoming.relay(peer).await {
                    Ok(relay) => {
                        let _ = relay.send_to(&bytes, incoming.inner_addr).await;
                    }
                    Err(error) => tracing::warn!(%peer, %error, "cannot relay gossip"),
                }
            }
        });
        Ok(Box::new(QuicSocket { inner, shared }))
    }
}

struct QuicSocket {
    inner: ChitchatUdp,
    shared: Arc<Shared>,
}

impl Drop for QuicSocket {
    fn drop(&mut self) {
        self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
    }
}

#[async_trait]
impl Socket for QuicSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.shared.endpoint.local_addr())
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let relay = self.shared.relay(to).await?;
        self.inner.send(relay.local_addr()?, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let mut outcome = self.inner.recv().await?;
            match self.shared.peer_of(outcome.from_addr) {
                Some(peer) => {
                    outcome.from_addr = peer;
                    return Ok(outcome);
                }
                None => {
                    tracing::warn!(from = %outcome.from_addr, "dropped a local datagram not from a gossip relay")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_idle_for_ten_minutes_are_closed_when_there_are_many() {
        let mut relays = Relays::default();
        let mut tasks = JoinSet::new();
        let now = Instant::now();
        let long_ago = now.checked_sub(RELAY_IDLE * 2).unwrap();
        for port in 0..(PRUNE_ABOVE as u16 + 10) {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let local = socket.local_addr().unwrap();
            let task = tasks.spawn(std::future::pending::<()>());
            let used = if port < 20 { long_ago } else { now };
            let peer = SocketAddr::from(([10, 0, 0, 1], port));
            relays.by_peer.insert(peer, Relay { socket, task, used });
            relays.by_local.insert(local, peer);
        }
        relays.prune(now);
        assert_eq!(relays.by_peer.len(), PRUNE_ABOVE - 10, "the 20 idle relays are gone");
        assert_eq!(relays.by_local.len(), relays.by_peer.len());
        // Their forwarding tasks were stopped.
        let mut stopped = 0;
        while let Some(done) =
            tokio::time::timeout(Duration::from_millis(200), tasks.join_next()).await.ok().flatten()
        {
            stopped += usize::from(done.is_err_and(|e| e.is_cancelled()));
        }
        assert_eq!(stopped, 20);
    }
}
