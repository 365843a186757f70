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
//! dropped). The carriage runs no task of its own: a send reads chitchat's datagram
//! back from the relay socket within chitchat's call (loopback hands a datagram over
//! within `sendto`), and chitchat's receive takes peers' messages from the endpoint's
//! inbox itself. Relay sockets are not registered with the runtime: only chitchat's
//! own socket is watched, so an outgoing message wakes nothing on its way through a
//! relay, and an incoming one wakes only chitchat's task.
//!
//! The third message of an exchange, the `Ack`, carries only a delta, whose encoding
//! chitchat does make public; so acks skip the relay both ways (one in three messages).
//! An ack travels as [`ACK_MARK`], chitchat's protocol version, then the delta;
//! whatever else a peer sends starts with chitchat's own magic number and goes through
//! the relay.
//!
//! Sending never waits for a peer: the endpoint queues the message or drops it, and
//! gossip's anti-entropy makes up for what is lost. A relay that carried nothing for
//! ten minutes (a peer that left, an address that changed) is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use cairn_transport::{Endpoint, GossipInbox};
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp};
use chitchat::{ChitchatEnvelope, ChitchatMessage, Deserializable, ProtocolVersion, Serializable};

/// Largest datagram chitchat sends.
const MAX_DATAGRAM: usize = 65_507;

thread_local! {
    /// Where chitchat's datagrams are read back from relays, one per worker thread.
    static RELAY_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
}

/// The first byte of an ack sent without the relay. chitchat's messages start with its
/// magic number, 45139 little-endian, whose first byte is 0x53.
const ACK_MARK: u8 = 0xCA;

/// `envelope`, if it is an ack, as it goes without the relay: [`ACK_MARK`], the
/// protocol version, the delta. (chitchat does not export the delta's type by name,
/// only its encoding traits.)
fn encode_ack(envelope: &ChitchatEnvelope) -> Option<Vec<u8>> {
    let ChitchatMessage::Ack { delta } = &envelope.message else { return None };
    let mut bytes = Vec::with_capacity(2 + delta.serialized_len());
    bytes.extend([ACK_MARK, envelope.version.to_code()]);
    delta.serialize(&mut bytes);
    Some(bytes)
}

/// The ack in `bytes`, if they are one ([`encode_ack`]); `Err` names what is wrong
/// with an ack that does not decode. Bytes from a peer are untrusted: a decoder that
/// panics on them counts as a bad ack, not a stopped carriage.
fn decode_ack(bytes: &[u8]) -> Option<Result<ChitchatEnvelope, String>> {
    let (&ACK_MARK, rest) = bytes.split_first()? else { return None };
    Some((|| {
        let (&code, mut delta) = rest.split_first().ok_or("no protocol version")?;
        let version = ProtocolVersion::from_code(code).ok_or(format!("unknown protocol version {code}"))?;
        let message = std::panic::catch_unwind(move || {
            Deserializable::deserialize(&mut delta).map(|delta| ChitchatMessage::Ack { delta })
        })
        .map_err(|_| "the delta's decoder panicked".to_owned())?
        .map_err(|e| format!("bad delta: {e:#}"))?;
        Ok(ChitchatEnvelope { version, message })
    })())
}

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

/// How long a send waits, at most, for chitchat's datagram to reach the relay socket.
/// Loopback hands it over within the `sendto` call, unless the kernel defers its
/// network work under load; past this, the message is given up (gossip makes up for
/// it).
const RELAY_PATIENCE: Duration = Duration::from_millis(20);

/// One peer's relay socket, its address (so sending to it costs no lookup) and when it
/// last carried a datagram. Relay sockets are plain non-blocking sockets, not
/// registered with the runtime: they are read and written only right after chitchat
/// wrote to them or before it reads, so nothing ever waits on them.
struct Relay {
    socket: Arc<std::net::UdpSocket>,
    local: SocketAddr,
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
                self.by_local.remove(&relay.local);
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
}

impl Shared {
    /// The relay socket for `peer` and its address, made on first use.
    fn relay(&self, peer: SocketAddr) -> anyhow::Result<(Arc<std::net::UdpSocket>, SocketAddr)> {
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(existing) = relays.by_peer.get_mut(&peer) {
            existing.used = now;
            return Ok((existing.socket.clone(), existing.local));
        }
        relays.prune(now);
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a gossip relay socket")?;
        socket.set_nonblocking(true).context("making a gossip relay socket non-blocking")?;
        let local = socket.local_addr().context("a gossip relay socket's address")?;
        let socket = Arc::new(socket);
        relays.by_peer.insert(peer, Relay { socket: socket.clone(), local, used: now });
        relays.by_local.insert(local, peer);
        Ok((socket, local))
    }

    fn peer_of(&self, relay: SocketAddr) -> Option<SocketAddr> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner).by_local.get(&relay).copied()
    }

    /// Sends what chitchat just wrote to `peer`'s relay socket on to `peer`; `false` if
    /// nothing was there yet.
    fn forward(&self, peer: SocketAddr, relay: &std::net::UdpSocket) -> std::io::Result<bool> {
        let mut forwarded = false;
        loop {
            let datagram = RELAY_BUFFER.with_borrow_mut(|buf| {
                relay.recv_from(buf).map(|(n, from)| (from == self.inner_addr).then(|| buf[..n].to_vec()))
            });
            match datagram {
                Ok(Some(message)) => {
                    let c = &self.counters;
                    GossipCounters::count(&c.messages_sent, &c.bytes_sent, message.len());
                    self.endpoint.send_gossip(peer, message);
                    forwarded = true;
                }
                Ok(None) => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(forwarded),
                Err(error) => return Err(error),
            }
        }
    }

    /// Takes one message from a peer: an ack is decoded here and returned; anything
    /// else goes to chitchat's socket through the peer's relay, for chitchat to decode.
    fn take(&self, peer: SocketAddr, bytes: Vec<u8>) -> Option<RecvOutcome> {
        let c = &self.counters;
        GossipCounters::count(&c.messages_received, &c.bytes_received, bytes.len());
        match decode_ack(&bytes) {
            Some(Ok(envelope)) => {
                return Some(RecvOutcome { from_addr: peer, envelope, num_bytes_received: bytes.len() });
            }
            Some(Err(error)) => {
                tracing::info!(%peer, %error, "bad gossip ack: ignored");
                return None;
            }
            None => {}
        }
        // A full receive buffer drops the message, as UDP would.
        match self.relay(peer).and_then(|(relay, _)| Ok(relay.send_to(&bytes, self.inner_addr)?)) {
            Ok(_) => {}
            Err(error) => tracing::debug!(%peer, %error, "cannot relay gossip"),
        }
        None
    }
}

#[async_trait]
impl Transport for QuicCarriage {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .context("the QUIC gossip carriage was already opened")?;
        let inner = ChitchatUdp::open("127.0.0.1:0".parse()?).await?;
        let shared = Shared {
            endpoint: self.endpoint.clone(),
            counters: self.counters.clone(),
            inner_addr: inner.local_addr()?,
            relays: Mutex::new(Relays::default()),
        };
        Ok(Box::new(QuicSocket { inner, inbox, inbox_open: true, shared }))
    }
}

/// The socket chitchat uses. It runs no task of its own: sending forwards chitchat's
/// datagram from the relay within the send, and receiving takes peers' messages from
/// the endpoint's inbox within chitchat's own receive.
struct QuicSocket {
    inner: ChitchatUdp,
    inbox: GossipInbox,
    /// Until the endpoint closes.
    inbox_open: bool,
    shared: Shared,
}

#[async_trait]
impl Socket for QuicSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.shared.endpoint.local_addr())
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        if let Some(bytes) = encode_ack(&envelope) {
            let c = &self.shared.counters;
            GossipCounters::count(&c.messages_sent, &c.bytes_sent, bytes.len());
            let num_bytes_sent = bytes.len();
            self.shared.endpoint.send_gossip(to, bytes);
            return Ok(SendOutcome { num_bytes_sent });
        }
        let (relay, relay_addr) = self.shared.relay(to)?;
        let outcome = self.inner.send(relay_addr, envelope).await?;
        let waited = Instant::now();
        while !self.shared.forward(to, &relay).context("reading a gossip relay socket")? {
            if waited.elapsed() > RELAY_PATIENCE {
                tracing::debug!(peer = %to, "gossip message not seen on its relay: given up");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // Both are cancel-safe, as chitchat needs of `recv`; what is done between
            // them does not wait.
            tokio::select! {
                biased;
                outcome = self.inner.recv() => {
                    let mut outcome = outcome?;
                    match self.shared.peer_of(outcome.from_addr) {
                        Some(peer) => {
                            outcome.from_addr = peer;
                            return Ok(outcome);
                        }
                        None => tracing::warn!(
                            from = %outcome.from_addr,
                            "dropped a local datagram not from a gossip relay"
                        ),
                    }
                }
                message = self.inbox.0.recv(), if self.inbox_open => match message {
                    Some((peer, bytes)) => {
                        if let Some(ack) = self.shared.take(peer, bytes) {
                            return Ok(ack);
                        }
                    }
                    None => self.inbox_open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use chitchat::transport::ChannelTransport;
    use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig};

    use super::*;

    /// chitchat's in-process transport, checking that every ack chitchat sends comes
    /// back from [`encode_ack`] and [`decode_ack`] as it was.
    struct AckChecking {
        inner: ChannelTransport,
        checked: Arc<AtomicUsize>,
    }

    struct AckCheckingSocket {
        inner: Box<dyn Socket>,
        checked: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Transport for AckChecking {
        async fn open(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
            Ok(Box::new(AckCheckingSocket {
                inner: self.inner.open(addr).await?,
                checked: self.checked.clone(),
            }))
        }
    }

    #[async_trait]
    impl Socket for AckCheckingSocket {
        fn local_addr(&self) -> anyhow::Result<SocketAddr> {
            self.inner.local_addr()
        }

        async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
            if let Some(bytes) = encode_ack(&envelope) {
                let back = decode_ack(&bytes).expect("an ack").expect("decodes");
                assert_eq!(back, envelope);
                self.checked.fetch_add(1, Ordering::Relaxed);
                return self.inner.send(to, back).await;
            }
            self.inner.send(to, envelope).await
        }

        async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
            self.inner.recv().await
        }
    }

    #[tokio::test]
    async fn acks_chitchat_sends_come_back_whole_from_their_encoding() {
        let checked = Arc::new(AtomicUsize::new(0));
        let transport =
            AckChecking { inner: ChannelTransport::with_mtu(MAX_DATAGRAM), checked: checked.clone() };
        let addr = |i: u16| SocketAddr::from(([10, 0, 0, 1], 7000 + i));
        let mut nodes = Vec::new();
        for i in 0..4u16 {
            let config = ChitchatConfig {
                chitchat_id: ChitchatId::new(format!("node-{i}"), 1, addr(i)),
                cluster_id: "acks".into(),
                gossip_interval: Duration::from_millis(20),
                listen_addr: addr(i),
                seed_nodes: vec![addr(0).to_string()],
                failure_detector_config: FailureDetectorConfig::default(),
                marked_for_deletion_grace_period: Duration::from_secs(3600),
                catchup_callback: None,
                extra_liveness_predicate: None,
                protocol_version: ProtocolVersion::V1,
            };
            let kv = (0..20).map(|k| (format!("key-{k}"), format!("value {k} of node {i}"))).collect();
            nodes.push(chitchat::spawn_chitchat(config, kv, &transport).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut complete = 0;
            for node in &nodes {
                let chitchat = node.chitchat();
                let chitchat = chitchat.lock().await;
                complete += usize::from(
                    chitchat.node_states().values().filter(|s| s.key_values().count() >= 20).count() == 4,
                );
            }
            if complete == 4 && checked.load(Ordering::Relaxed) >= 20 {
                break;
            }
            assert!(Instant::now() < deadline, "no full exchange of values within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn hostile_acks_are_refused_with_what_is_wrong() {
        assert!(decode_ack(&[]).is_none());
        assert!(decode_ack(&[0x53, 0xB0, 1, 2]).is_none(), "chitchat's own messages are not acks");
        let refused = |bytes: &[u8]| decode_ack(bytes).expect("an ack").expect_err("refused");
        assert!(refused(&[ACK_MARK]).contains("no protocol version"));
        assert!(refused(&[ACK_MARK, 9]).contains("unknown protocol version 9"));
        assert!(refused(&[ACK_MARK, 1, 0xFF, 0xFF, 0xFF]).starts_with("bad delta"));
    }

    proptest::proptest! {
        /// Whatever follows the mark, chitchat's decoder answers without panicking (the
        /// carriage would survive it, but it would mean a peer can make chitchat panic).
        #[test]
        fn any_bytes_after_the_mark_decode_or_are_refused(
            version in 0u8..3,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let bytes: Vec<u8> = [ACK_MARK, version].into_iter().chain(body).collect();
            if let Some(Err(error)) = decode_ack(&bytes) {
                proptest::prop_assert!(!error.contains("panicked"), "{}", error);
            }
        }
    }

    #[test]
    fn relays_idle_for_ten_minutes_are_closed_when_there_are_many() {
        let mut relays = Relays::default();
        let now = Instant::now();
        let long_ago = now.checked_sub(RELAY_IDLE * 2).unwrap();
        for port in 0..(PRUNE_ABOVE as u16 + 10) {
            let socket = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let local = socket.local_addr().unwrap();
            let used = if port < 20 { long_ago } else { now };
            let peer = SocketAddr::from(([10, 0, 0, 1], port));
            relays.by_peer.insert(peer, Relay { socket, local, used });
            relays.by_local.insert(local, peer);
        }
        relays.prune(now);
        assert_eq!(relays.by_peer.len(), PRUNE_ABOVE - 10, "the 20 idle relays are gone");
        assert_eq!(relays.by_local.len(), relays.by_peer.len());
        assert!(relays.by_peer.values().all(|r| r.used == now));
    }
}
