//! Parsing `HOST:PORT` arguments.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `HOST:PORT`, resolving a host name to its first address.
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text.to_socket_addrs().map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?;
    addrs.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}
