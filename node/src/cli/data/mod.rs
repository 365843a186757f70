//! `cairn ctl publish` and `cairn ctl read`: write messages by topic and read them back
//! across shards, through `cairn-client` (the same code path an application uses):
//! routes from the node, each request to a holder of its shard and on to the next when
//! one cannot be reached or no longer holds it.

mod publish;
mod read;

pub(crate) use publish::{PublishArgs, publish};
pub(crate) use read::{ReadArgs, read};

use crate::cli::client::Client;

/// A `cairn-client` over the CLI's endpoint, seeded with the node, as patient as
/// `--timeout`.
fn data_client(client: &Client) -> cairn_client::Client {
    let mut config = cairn_client::ClientConfig::new([client.node()]);
    config.request_timeout = client.timeout();
    config.connect_timeout = client.timeout().min(std::time::Duration::from_secs(30));
    cairn_client::Client::with_endpoint(client.endpoint().clone(), config)
}

/// The CLI's words for a client error: an out-of-range read says how to skip.
fn explain(error: cairn_client::Error) -> anyhow::Error {
    match error {
        cairn_client::Error::OutOfRange { shard, gone, skip } => anyhow::anyhow!(
            "out of range: shard {shard}: {gone}; to skip what is gone, read --from {}",
            skip.token()
        ),
        other => anyhow::anyhow!(other),
    }
}
