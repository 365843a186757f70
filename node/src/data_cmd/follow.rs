//! `ctl read --follow`: one subscription per shard, each resumed from its last position
//! at another holder when its site goes away or stops holding the shard.
//!
//! Each shard's task grants credit for a batch only once the batch is printed, so a slow
//! terminal pauses the sites instead of filling memory.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use cairn_inventory::{Entry, FetchStart, Frontier, OutOfRange};
use cairn_transport::{Endpoint, SubscribeRequest, SubscriptionFrame};
use tokio::sync::{mpsc, oneshot};

use super::cursor::Cursor;
use super::read::{Reading, ShardRead, reads_token};

/// Entries a subscription may send ahead of what is printed.
const CREDIT: u32 = 1000;
/// A subscription that sends nothing (not even `Idle`) for this long is given up.
const SILENCE: Duration = Duration::from_secs(8);

enum Event {
    Batch { read: usize, at: SocketAddr, entries: Vec<Entry>, cursor: Frontier, printed: oneshot::Sender<()> },
    OutOfRange { read: usize, at: SocketAddr, gone: OutOfRange },
}

/// Follows every shard until interrupted (or an out-of-range position).
pub(super) async fn follow(reading: &mut Reading<'_>, reads: &mut [ShardRead]) -> anyhow::Result<()> {
    let (events, mut incoming) = mpsc::channel(reads.len().max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, read) in reads.iter().enumerate() {
        let request = SubscribeRequest {
            db: reading.args.db.clone(),
            shard: read.shard,
            start: FetchStart::Earliest,
            filter: reading.args.filter.clone(),
            since_ms: reading.since_ms,
            credit: CREDIT,
        };
        let endpoint = reading.client.endpoint().clone();
        tasks.spawn(shard_task(
            endpoint,
            request,
            read.holders.clone(),
            read.position.clone(),
            i,
            events.clone(),
        ));
    }
    drop(events);
    while let Some(event) = incoming.recv().await {
        match event {
            Event::Batch { read, at, entries, cursor, printed } => {
                reading.print(reads[read].shard, &entries)?;
                reads[read].position = Some(cursor);
                reading.note_site(at);
                reading.print_cursor(reads)?;
                let _ = printed.send(());
            }
            Event::OutOfRange { read, at, gone } => {
                let mut skip = Cursor::parse(&reads_token(reads))?;
                skip.0.insert(reads[read].shard, gone.start.clone());
                bail!(
                    "out of range: shard {} at {at}: {gone}; to skip what is gone, read --from {}",
                    reads[read].shard,
                    skip.token()
                );
            }
        }
    }
    Ok(())
}

/// One shard's subscription, resumed elsewhere whenever it breaks.
async fn shard_task(
    endpoint: Endpoint,
    mut request: SubscribeRequest,
    mut holders: Vec<SocketAddr>,
    mut position: Option<Frontier>,
    read: usize,
    events: mpsc::Sender<Event>,
) {
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let at = holders[next % holders.len()];
        request.start = position.clone().map_or(FetchStart::Earliest, FetchStart::After);
        if let Ok(mut subscription) = endpoint.subscribe(at, &request).await {
            loop {
                match subscription.next_within(SILENCE).await {
                    Ok(Some(SubscriptionFrame::Entries { entries, cursor })) => {
                        backoff = Duration::from_millis(100);
                        let n = entries.len() as u32;
                        position = Some(cursor.clone());
                        let (printed, done) = oneshot::channel();
                        if events.send(Event::Batch { read, at, entries, cursor, printed }).await.is_err() {
                            return;
                        }
                        if done.await.is_err() || subscription.credit(n).await.is_err() {
                            break;
                        }
                    }
                    // Everything up to it that matched was sent before it.
                    Ok(Some(SubscriptionFrame::Idle { cursor })) => position = Some(cursor),
                    Ok(Some(SubscriptionFrame::OutOfRange(gone))) => {
                        let _ = events.send(Event::OutOfRange { read, at, gone }).await;
                        return;
                    }
                    Ok(Some(SubscriptionFrame::Refused { holders: elsewhere, .. })) => {
                        for holder in elsewhere {
                            if !holders.contains(&holder) {
                                holders.push(holder);
                            }
                        }
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        next += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
