//! Follows a db by topic filter and prints each entry with its shard, resuming from a
//! cursor if given; prints the cursor to resume from every 1,000 entries and at the end
//! (after `--max` entries, or Ctrl-C):
//!
//! ```sh
//! cargo run -p cairn-client --example consumer -- CREDENTIALS_DIR HOST:PORT DB [FILTER] [CURSOR]
//! ```

use cairn_client::{Client, ClientConfig, Cursor, SubscribeOptions, TopicFilter};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, seed, db, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: consumer CREDENTIALS_DIR HOST:PORT DB [FILTER] [CURSOR]");
    };
    let filter = TopicFilter::new(rest.first().map_or("#", String::as_str))?;
    let from = rest.get(1).map_or(Ok(Cursor::default()), |c| c.parse())?;
    let client = Client::connect(std::path::Path::new(dir), ClientConfig::new([seed.parse()?]))?;
    let options = SubscribeOptions { filter, ..Default::default() };
    let mut subscription = client.subscribe(&db.parse()?, from, &options).await?;
    let mut seen = 0u64;
    loop {
        tokio::select! {
            next = subscription.next() => match next {
                Some(delivered) => {
                    let delivered = delivered?;
                    let e = &delivered.entry;
                    println!("{} {} {}:{} {}", delivered.shard, e.topic, e.id.origin, e.id.seq, String::from_utf8_lossy(&e.payload));
                    seen += 1;
                    if seen.is_multiple_of(1000) {
                        println!("cursor {}", subscription.cursor());
                    }
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("cursor {}", subscription.cursor());
    client.close().await;
    Ok(())
}
