//! Counters of what an endpoint did, for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::wire::WireCounters;

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?; wire { $($wire:ident: $wire_doc:literal),* $(,)? }) => {
        /// Live counters, shared by an endpoint's tasks.
        #[derive(Debug, Default)]
        pub(crate) struct Stats { $(pub(crate) $name: AtomicU64,)* }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct StatsSnapshot {
            $(#[doc = $doc] pub $name: u64,)*
            $(#[doc = $wire_doc] pub $wire: u64,)*
        }

        impl Stats {
            pub(crate) fn snapshot_with(&self, wire: &WireCounters) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    $($wire: wire.$wire.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    handshakes_ok: "Connections whose TLS handshake succeeded (both directions).",
    handshakes_refused: "Handshakes that failed: no, untrusted or expired certificate, no identity in it, wrong ALPN, timeout.",
    retries_sent: "Incoming connections asked to prove their address (QUIC retry).",
    connections_refused: "Incoming connections refused because the endpoint was full.",
    requests_served: "Requests answered with a response.",
    request_errors: "Requests answered with an error (bad frame, undecodable, busy, timeout).",
    gossip_sent: "Gossip messages handed to QUIC.",
    gossip_received: "Gossip messages received and queued for the gossip layer.",
    gossip_dropped: "Gossip messages dropped (queue full, too many in flight, or send failed).",
    gossip_forbidden: "Gossip messages ignored because the sender's certificate is not a site's.",
    connections_stalled: "Connections closed because nothing came back on them for the stall timeout (then dialled again).";
    wire {
        datagrams_sent: "UDP datagrams the endpoint sent (every QUIC packet: requests, pulls, gossip, acknowledgements).",
        bytes_sent: "Bytes of those datagrams (UDP payload: QUIC headers and encryption included).",
        datagrams_received: "UDP datagrams the endpoint received.",
        bytes_received: "Bytes of those datagrams.",
    }
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
