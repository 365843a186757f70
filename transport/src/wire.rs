//! Bytes on the wire: a UDP socket wrapper that counts every datagram quinn sends and
//! receives (packet headers, encryption, acknowledgements and retransmissions included),
//! so what a site costs the network is measured, not estimated from payload sizes.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Datagrams and bytes through one endpoint's socket, since it was bound.
#[derive(Debug, Default)]
pub(crate) struct WireCounters {
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

/// quinn's socket, counted.
pub(crate) struct CountedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    counters: Arc<WireCounters>,
}

impl CountedSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, counters: Arc<WireCounters>) -> Self {
        Self { inner, counters }
    }
}

impl fmt::Debug for CountedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedSocket").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// How many datagrams one transmit is: several when segmentation offload batches them.
fn datagrams_in(transmit: &Transmit) -> u64 {
    match transmit.segment_size {
        Some(size) if size > 0 => transmit.contents.len().div_ceil(size) as u64,
        _ => 1,
    }
}

impl AsyncUdpSocket for CountedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        self.counters.datagrams_sent.fetch_add(datagrams_in(transmit), Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            for m in &meta[..*n] {
                let datagrams = if m.stride > 0 { m.len.div_ceil(m.stride) } else { 1 };
                self.counters.datagrams_received.fetch_add(datagrams as u64, Ordering::Relaxed);
                self.counters.bytes_received.fetch_add(m.len as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
