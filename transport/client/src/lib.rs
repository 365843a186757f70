//! The Rust client of a cairn cluster.
//!
//! A [`Client`] connects with an application's certificate (written by `cairn cluster
//! issue-cert --client NAME --out DIR`) to one or more seed sites, learns each db's
//! routes (which sites hold a ready replica of which shard) and keeps them fresh. Then:
//!
//! - [`Client::publish`] writes messages to a shard and waits for their ids;
//!   [`Client::producer`] makes a [`Producer`] that pipelines many, batched per shard,
//!   each [`Producer::send`] answering an [`Acknowledgement`] future, with idempotent
//!   retries;
//! - [`Client::read`] reads a db across shards by topic filter and start time from a
//!   [`Cursor`], optionally waiting for new entries;
//! - [`Client::subscribe`] streams matching entries as they arrive ([`Subscription`]).
//!
//! Every request goes to a holder of its shard, and on to the next when one cannot be
//! reached or no longer holds it; cursors are valid on every replica, so a reader that
//! fails over neither misses nor repeats an entry. Errors say what happened
//! ([`Error::Unreachable`], [`Error::Forbidden`], [`Error::OutOfRange`],
//! [`Error::OutcomeUnknown`], …).
//!
//! The crate builds without a storage engine or the gossip layer: only the shared value
//! types (`cairn-types`) and the QUIC transport (`cairn-transport`).
//!
//! ```no_run
//! use cairn_client::{Ack, Client, ClientConfig, Cursor, Message, ProducerOptions, ReadOptions, Topic};
//!
//! # async fn example() -> Result<(), cairn_client::Error> {
//! let client = Client::connect(
//!     std::path::Path::new("./app-credentials"),
//!     ClientConfig::new(["127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7002".parse().unwrap()]),
//! )?;
//! let db = "demo".parse()?;
//! let producer = client.producer(db, ProducerOptions { ack: Ack::Quorum, ..Default::default() })?;
//! let ack = producer.send(Message::new(Topic::new("greetings/en")?, "hello")).await?;
//! println!("stored as {:?}", ack.await?.id);
//! producer.close().await;
//!
//! let batch = client.read(&"demo".parse()?, &Cursor::default(), &ReadOptions::default()).await?;
//! println!("{} entries; resume with {}", batch.entries.len(), batch.cursor);
//! client.close().await;
//! # Ok(()) }
//! ```

mod client;
mod cursor;
mod error;
mod producer;
mod publish;
mod read;
mod subscribe;

pub use cairn_transport::{Ack, Credentials, Routes};
pub use cairn_types::{
    DbName, Entry, EntryId, Frontier, Message, MessageKey, OutOfRange, ProducerName, SiteId, Stored, Topic,
    TopicFilter,
};
pub use client::{Client, ClientConfig};
pub use cursor::Cursor;
pub use error::{Error, Result};
pub use producer::{Acknowledgement, Producer, ProducerOptions};
pub use publish::{PublishOptions, Published};
pub use read::{Delivered, ReadBatch, ReadOptions};
pub use subscribe::{SubscribeOptions, Subscription};
