//! The transport's limits and timeouts, each with a default and a checked range.

use std::sync::Arc;
use std::time::Duration;

use crate::error::TransportError;

const MIB: u64 = 1 << 20;

/// Limits and timeouts of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest frame a peer may send; a larger length prefix is refused unread.
    pub max_frame_bytes: usize,
    /// Total bytes of request frames buffered at once, over all connections; requests
    /// beyond it wait (up to the request deadline) and are then answered `Busy`.
    pub max_buffered_request_bytes: usize,
    /// Concurrent request streams a peer may open on one connection.
    pub max_concurrent_streams: u32,
    /// Flow-control window of one stream.
    pub stream_receive_window: u64,
    /// Flow-control window of one connection (quinn's default is unbounded).
    pub connection_receive_window: u64,
    /// Bytes in flight we send on one connection.
    pub send_window: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval (must be below the idle timeout).
    pub keep_alive: Duration,
    /// A handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Connecting to a peer must finish within this.
    pub connect_timeout: Duration,
    /// A request (sent, handled, answered) must finish within this.
    pub request_timeout: Duration,
    /// When more handshakes than this are in progress, new ones must first prove their
    /// address (QUIC retry).
    pub retry_above_handshakes: usize,
    /// Most open connections; more are refused.
    pub max_connections: usize,
    /// Handshakes in progress from one source address; more are refused.
    pub max_handshakes_per_addr: usize,
    /// Connections open from one source address; more are refused.
    pub max_connections_per_addr: usize,
    /// First wait after a failed connection attempt; doubles per failure.
    pub reconnect_backoff: Duration,
    /// Longest wait between connection attempts.
    pub max_reconnect_backoff: Duration,
    /// Longest wait between connection attempts that gossip makes to a peer it cannot
    /// reach (shorter than for requests: a peer coming back from a partition is heard
    /// within this plus one handshake; a dead peer costs a handshake packet this often,
    /// and only when gossip is sent to it).
    pub gossip_redial: Duration,
    /// A connection on which something was sent this long ago and nothing has come back
    /// since (not an acknowledgement, not a keep-alive answer) has stalled: gossip
    /// closes it and dials again. QUIC alone would resume it once the path heals, but
    /// only at its next loss probe, which backs off to many seconds during a long cut.
    pub stall_timeout: Duration,
    /// The round-trip time QUIC assumes before it has measured one (handshake
    /// retransmissions come after three of these).
    pub initial_rtt: Duration,
    /// Gossip messages being sent at once; more are dropped (gossip tolerates loss).
    pub max_gossip_in_flight: usize,
    /// Received gossip messages waiting for the gossip layer; more are dropped.
    pub gossip_inbox: usize,
    /// Largest gossip message.
    pub max_gossip_bytes: usize,
    /// Upper bound of path-MTU discovery (UDP payload bytes). `None`: quinn's 1452,
    /// safe on any Ethernet path. A larger bound also sizes quinn's receive buffer
    /// (bound × 64 GRO segments × 32 datagrams, zeroed at start and touched by bursts of
    /// inbound traffic: 12.3 MB at 6000 against 2.9 MB at 1452): on loopback 6000 doubles
    /// bulk throughput, which a site, bound by its disk, does not use. Above ~8000,
    /// loopback transfers were seen to stall.
    pub mtu_upper_bound: Option<u16>,
    /// The congestion controller of every connection.
    pub congestion: Congestion,
}

/// A congestion controller (quinn's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Congestion {
    /// CUBIC (quinn's default): backs off on every loss, so random loss on a long path
    /// holds throughput far below the link's (about MSS / RTT × 1.2 / √loss).
    #[default]
    Cubic,
    /// BBR (quinn marks it experimental): paces at the measured bottleneck bandwidth
    /// instead of cutting its window on every loss — for lossy, long paths.
    Bbr,
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
        })
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cubic" => Ok(Self::Cubic),
            "bbr" => Ok(Self::Bbr),
            other => Err(format!("unknown congestion controller {other:?}: use cubic or bbr")),
        }
    }
}

/// The MTU bound used elsewhere when none is set (quinn's default).
pub const DEFAULT_MTU: u16 = 1452;

/// Unidirectional streams a peer may have open at once on one connection. They carry
/// only gossip messages too large for one datagram, a few at a time per peer (a site
/// sends at most `max_gossip_in_flight` to all peers together). quinn sets up the
/// state of every stream a peer may open when the connection starts, so this bound is
/// paid by each of a site's connections — with a hundred sites, by a hundred of them.
pub const MAX_GOSSIP_STREAMS: u32 = 32;

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_buffered_request_bytes: 256 << 20,
            max_concurrent_streams: 256,
            stream_receive_window: 8 * MIB,
            connection_receive_window: 16 * MIB,
            send_window: 4 * MIB,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            retry_above_handshakes: 16,
            max_connections: 4096,
            max_handshakes_per_addr: 4,
            max_connections_per_addr: 16,
            reconnect_backoff: Duration::from_millis(100),
            max_reconnect_backoff: Duration::from_secs(5),
            gossip_redial: Duration::from_millis(250),
            stall_timeout: Duration::from_secs(2),
            initial_rtt: Duration::from_millis(100),
            max_gossip_in_flight: 256,
            gossip_inbox: 1024,
            max_gossip_bytes: 256 << 10,
            mtu_upper_bound: None,
            congestion: Congestion::Cubic,
        }
    }
}

impl TransportConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |what, why: &str| Err(TransportError::InvalidSetting { what, why: why.into() });
        if !(1024..=(1 << 30)).contains(&self.max_frame_bytes) {
            return bad("max_frame_bytes", "must be between 1 KiB and 1 GiB");
        }
        if self.max_buffered_request_bytes < self.max_frame_bytes {
            return bad("max_buffered_request_bytes", "must be at least max_frame_bytes");
        }
        if !(1..=10_000).contains(&self.max_concurrent_streams) {
            return bad("max_concurrent_streams", "must be between 1 and 10000");
        }
        if self.stream_receive_window < 16 << 10
            || self.connection_receive_window < self.stream_receive_window
        {
            return bad("receive windows", "stream window ≥ 16 KiB and connection window ≥ stream window");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad("keep_alive", "must be above zero and below idle_timeout");
        }
        for (what, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("reconnect_backoff", self.reconnect_backoff),
            ("gossip_redial", self.gossip_redial),
            ("stall_timeout", self.stall_timeout),
            ("initial_rtt", self.initial_rtt),
        ] {
            if d.is_zero() {
                return bad(what, "must be above zero");
            }
        }
        if self.mtu_upper_bound.is_some_and(|m| !(1200..=9000).contains(&m)) {
            return bad("mtu_upper_bound", "must be between 1200 and 9000");
        }
        if self.max_connections == 0 || self.max_gossip_in_flight == 0 || self.gossip_inbox == 0 {
            return bad("max_connections / gossip limits", "must be above zero");
        }
        if self.max_handshakes_per_addr == 0 || self.max_connections_per_addr == 0 {
            return bad("per-address limits", "must be above zero");
        }
        Ok(())
    }

    /// The path-MTU bound.
    pub fn mtu(&self) -> u16 {
        self.mtu_upper_bound.unwrap_or(DEFAULT_MTU)
    }

    /// quinn's endpoint config: UDP payloads up to the MTU bound.
    pub fn quinn_endpoint(&self) -> Result<quinn::EndpointConfig, TransportError> {
        let mut e = quinn::EndpointConfig::default();
        self.configure_endpoint(&mut e)?;
        Ok(e)
    }

    /// Applies these settings to a quinn endpoint config.
    pub fn configure_endpoint(&self, e: &mut quinn::EndpointConfig) -> Result<(), TransportError> {
        e.max_udp_payload_size(self.mtu().max(DEFAULT_MTU))
            .map_err(|e| TransportError::InvalidSetting { what: "mtu_upper_bound", why: e.to_string() })?;
        Ok(())
    }

    /// These settings as quinn's transport config (what every connection uses).
    pub fn quinn_transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        let varint = |what: &'static str, v: u64| {
            quinn::VarInt::from_u64(v)
                .map_err(|_| TransportError::InvalidSetting { what, why: "too large".into() })
        };
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_concurrent_streams.into())
            .max_concurrent_uni_streams(MAX_GOSSIP_STREAMS.into())
            .stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint("connection_receive_window", self.connection_receive_window)?)
            .send_window(self.send_window)
            .keep_alive_interval(Some(self.keep_alive))
            .initial_rtt(self.initial_rtt)
            .max_idle_timeout(Some(self.idle_timeout.try_into().map_err(|_| {
                TransportError::InvalidSetting { what: "idle_timeout", why: "too large".into() }
            })?));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu());
        t.mtu_discovery_config(Some(mtu));
        match self.congestion {
            Congestion::Cubic => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
            }
            Congestion::Bbr => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            }
        };
        Ok(t)
    }
}
