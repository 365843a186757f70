//! cairn's cluster tests (not built yet; issues 6 and 9): real multi-process clusters on
//! loopback and in network namespaces, with faults injected. The single-crate tests live
//! beside their crates (`inventory/tests`, `node/tests`).
