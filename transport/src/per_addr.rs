//! What one source address may hold of a site's endpoint: handshakes in progress and
//! established connections, each capped; and refusals logged at most once a minute per
//! address (always counted), so a flood of bad handshakes cannot fill the log.
//!
//! Addresses holding nothing are forgotten, so the tables stay as small as the set of
//! peers connected now.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Refusals from one address are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The refusal log forgets addresses once it holds this many (after a minute).
const LOG_TABLE: usize = 1024;

#[derive(Debug, Default)]
struct Held {
    handshaking: usize,
    connected: usize,
}

/// Per-address caps.
#[derive(Debug)]
pub(crate) struct PerAddr {
    max_handshakes: usize,
    max_connections: usize,
    held: Mutex<HashMap<SocketAddr, Held>>,
    /// Per IP: when a refusal was last logged, and refusals since.
    logged: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

/// A handshake in progress, or (after [`Slot::connected`]) a connection; freed on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<PerAddr>,
    addr: SocketAddr,
    connected: bool,
}

impl PerAddr {
    pub(crate) fn new(max_handshakes: usize, max_connections: usize) -> Arc<Self> {
        Arc::new(Self { max_handshakes, max_connections, held: Mutex::default(), logged: Mutex::default() })
    }

    /// A handshake slot for `addr`, or why not.
    pub(crate) fn handshake(self: &Arc<Self>, addr: SocketAddr) -> Result<Slot, String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(addr).or_default();
        if entry.handshaking >= self.max_handshakes {
            return Err(format!("{} handshakes already in progress from this address", entry.handshaking));
        }
        if entry.connected >= self.max_connections {
            return Err(format!("{} connections already open from this address", entry.connected));
        }
        entry.handshaking += 1;
        Ok(Slot { table: self.clone(), addr, connected: false })
    }

    /// Whether a refusal from `addr` should be logged now (at most once a minute per
    /// IP); answers the refusals not logged since the last line.
    pub(crate) fn should_log(&self, addr: SocketAddr) -> Option<u64> {
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= LOG_TABLE {
            logged.retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
        }
        match logged.get_mut(&addr.ip()) {
            Some((at, quiet)) if now.duration_since(*at) < LOG_EVERY => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                let skipped = *quiet;
                *at = now;
                *quiet = 0;
                Some(skipped)
            }
            None => {
                logged.insert(addr.ip(), (now, 0));
                Some(0)
            }
        }
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Slot {
    /// The handshake succeeded: the slot now counts a connection, if the address may
    /// open another.
    pub(crate) fn connected(mut self) -> Result<Self, String> {
        let mut held = self.table.held.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(self.addr).or_default();
        if entry.connected >= self.table.max_connections {
            return Err(format!("{} connections already open from this address", entry.connected));
        }
        entry.handshaking = entry.handshaking.saturating_sub(1);
        entry.connected += 1;
        drop(held);
        self.connected = true;
        Ok(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.table.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&self.addr) {
            if self.connected {
                entry.connected = entry.connected.saturating_sub(1);
            } else {
                entry.handshaking = entry.handshaking.saturating_sub(1);
            }
            if entry.connected == 0 && entry.handshaking == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn handshakes_and_connections_are_capped_per_address_and_freed() {
        let table = PerAddr::new(2, 1);
        let a = table.handshake(addr(1)).unwrap();
        let b = table.handshake(addr(1)).unwrap();
        assert!(table.handshake(addr(1)).unwrap_err().contains("2 handshakes"));
        let other = table.handshake(addr(2)).unwrap();
        let a = a.connected().unwrap();
        // One connection open: the second handshake may not become one.
        assert!(b.connected().unwrap_err().contains("1 connections"));
        assert!(table.handshake(addr(1)).unwrap_err().contains("connections already open"));
        drop((a, other));
        assert_eq!(table.addresses(), 0, "addresses holding nothing are forgotten");
        assert!(table.handshake(addr(1)).is_ok());
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_address() {
        let table = PerAddr::new(1, 1);
        assert_eq!(table.should_log(addr(1)), Some(0));
        assert_eq!(table.should_log(addr(2)), None, "same IP, other port: same minute");
        assert_eq!(table.should_log(addr(1)), None);
        assert_eq!(table.should_log(SocketAddr::from(([10, 0, 0, 1], 1))), Some(0));
    }
}
