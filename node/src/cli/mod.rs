//! The `cairn` binary's commands: one module per command (`start`, `local`, `ctl` with
//! `data`, `plan` and `wait`, `dump`, `cluster` with `revoke`, `inventory`, `import`),
//! and their helpers (`config`: a site's settings; `client`: the CLI's connection to a
//! site; `addr`; `logging`). The site itself is the `cairn_node` library beside it.

pub(crate) mod addr;
pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod ctl;
pub(crate) mod data;
pub(crate) mod dump;
pub(crate) mod import;
pub(crate) mod inventory;
pub(crate) mod local;
pub(crate) mod logging;
pub(crate) mod plan;
pub(crate) mod revoke;
pub(crate) mod start;
pub(crate) mod wait;
