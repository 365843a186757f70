//! cairn's QUIC transport (not built yet; issue 3): one quinn endpoint per site with
//! mutual TLS, framed requests, plan delivery and catch-up streams.
