//! The pieces of a running cairn site, used by the `cairn` binary and by tests that run
//! several sites in one process.
//!
//! - [`site`]: starting a site (inventory + endpoint) and stopping it;
//! - [`credentials`]: a site's certificate, issued into its data dir and checked at start;
//! - [`planner`]: pure planners (view + request → plan per site);
//! - [`executor`]: runs the head step of each pending plan;
//! - [`follow`]: which shards a replicant keeps a read-only copy of;
//! - [`db_settings`]: changing and dropping dbs, and each site taking such changes up;
//! - [`automation`]: the planner of record turns the view into plans;
//! - [`service`]: what a site answers to each request;
//! - [`metrics`]: the Prometheus endpoint (`--metrics-listen`);
//! - [`data`]: shard data: writes, reads, pull streams, catch-up and follow;
//! - [`snapshot`]: what a site publishes, read from its inventory;
//! - [`http`]: the HTTP/JSON gateway and the live page (`--http-listen`);
//! - [`since`]: reading a `--since` time for reads and subscriptions;
//! - [`supervisor`]: runs the site's tasks, restarting those that panic.
//!
//! The `cairn` binary's commands are in `src/cli/`, beside this library and not part of it.

pub mod automation;
pub mod credentials;
pub mod data;
pub mod db_settings;
pub mod executor;
pub mod follow;
pub mod http;
pub mod metrics;
pub mod planner;
pub mod service;
pub mod since;
pub mod site;
pub mod snapshot;
pub mod supervisor;
