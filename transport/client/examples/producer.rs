//! Publishes N messages (default 10,000) to a db with a pipelining producer and waits
//! for every acknowledgement:
//!
//! ```sh
//! cargo run -p cairn-client --example producer -- CREDENTIALS_DIR HOST:PORT DB [N]
//! ```
//!
//! CREDENTIALS_DIR is what `cairn cluster issue-cert --client NAME --out DIR` wrote (or
//! `cairn local`'s operator credentials).

use std::time::Instant;

use cairn_client::{Ack, Client, ClientConfig, Message, ProducerOptions, Topic};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, seed, db, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: producer CREDENTIALS_DIR HOST:PORT DB [N]");
    };
    let n: usize = rest.first().map_or(Ok(10_000), |n| n.parse())?;
    let client = Client::connect(std::path::Path::new(dir), ClientConfig::new([seed.parse()?]))?;
    let producer =
        client.producer(db.parse()?, ProducerOptions { ack: Ack::Quorum, ..Default::default() })?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let topic = Topic::new(format!("example/{}", i % 16))?;
        acks.push(producer.send(Message::new(topic, format!("message {i}"))).await?);
    }
    let mut duplicates = 0;
    for ack in acks {
        duplicates += usize::from(ack.await?.duplicate);
    }
    let took = started.elapsed();
    println!(
        "{n} messages acknowledged (quorum) in {took:.2?}: {:.0}/s; {duplicates} were already stored",
        n as f64 / took.as_secs_f64()
    );
    producer.close().await;
    client.close().await;
    Ok(())
}
