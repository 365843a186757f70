//! Serving subscriptions: a shard's matching entries pushed as they arrive, within the
//! reader's credit (see `cairn_transport::subscribe`).

use std::net::SocketAddr;

use cairn_inventory::{FetchStart, Frontier};
use cairn_transport::{
    Credit, FetchRequest, MAX_CREDIT, Response, SubscribeRequest, SubscriptionFrame, SubscriptionSender,
};
use tokio::sync::mpsc;

/// Sends a frame, giving up (the reader stopped taking bytes) after `stall`.
async fn sent(
    out: &mut cairn_transport::FrameSender<SubscriptionFrame>,
    frame: &SubscriptionFrame,
    stall: std::time::Duration,
) -> bool {
    matches!(tokio::time::timeout(stall, out.send(frame)).await, Ok(Ok(())))
}

use super::SiteService;

/// Entries one frame carries at most.
const FRAME_ENTRIES: u64 = 1000;

impl SiteService {
    pub(super) async fn serve_subscription(
        &self,
        peer: SocketAddr,
        request: SubscribeRequest,
        out: SubscriptionSender,
    ) {
        let SubscriptionSender { frames: mut out, credits: mut credit_frames } = out;
        let _ticket = match self.data.subscriptions.try_take(peer, 1) {
            Ok(ticket) => ticket,
            Err(why) => {
                let reason = format!("too many subscriptions: {why}; try again later");
                let _ = out.send(&SubscriptionFrame::Refused { reason, holders: Vec::new() }).await;
                out.finish();
                return;
            }
        };
        // Credits are read by their own task: a frame half read must not be dropped
        // when the loop below turns to something else.
        let (credit_tx, mut credits) = mpsc::channel::<u32>(16);
        let reader = tokio::spawn(async move {
            while let Ok(Some(Credit { entries })) = credit_frames.next().await {
                if credit_tx.send(entries).await.is_err() {
                    break;
                }
            }
        });
        let _stop_reader = super::AbortOnDrop(reader);
        let (db, shard) = (request.db.clone(), request.shard);
        let mut credit = u64::from(request.credit.min(MAX_CREDIT));
        let mut start = request.start.clone();
        let mut position = match &start {
            FetchStart::After(position) => position.clone(),
            FetchStart::Earliest => Frontier::default(),
        };
        let mut grew = self.data.signals.subscribe(&db, shard);
        let (idle_every, stall) = (self.data.config.idle_every, self.data.config.pull_stall);
        loop {
            if credit > 0 {
                grew.borrow_and_update();
                let fetch = FetchRequest {
                    db: db.clone(),
                    shard,
                    start: start.clone(),
                    filter: request.filter.clone(),
                    since_ms: request.since_ms,
                    max_entries: credit.min(FRAME_ENTRIES) as u32,
                    wait_ms: 0,
                };
                let more = match self.fetch_once(peer, &fetch, true).await {
                    Response::Fetched { entries, cursor, more } => {
                        start = FetchStart::After(cursor.clone());
                        position = cursor.clone();
                        if !entries.is_empty() {
                            credit -= (entries.len() as u64).min(credit);
                            if !sent(&mut out, &SubscriptionFrame::Entries { entries, cursor }, stall).await {
                                return;
                            }
                        }
                        more
                    }
                    Response::OutOfRange(gone) => {
                        let _ = out.send(&SubscriptionFrame::OutOfRange(gone)).await;
                        out.finish();
                        return;
                    }
                    Response::NotHere { reason, holders } => {
                        let _ = out.send(&SubscriptionFrame::Refused { reason, holders }).await;
                        out.finish();
                        return;
                    }
                    other => {
                        let reason = format!("the site cannot read the shard: {other:?}");
                        let _ = out.send(&SubscriptionFrame::Refused { reason, holders: Vec::new() }).await;
                        out.finish();
                        return;
                    }
                };
                if more && credit > 0 {
                    continue;
                }
            }
            // Wait for new entries (when there is credit to send them), more credit, or
            // the idle period.
            tokio::select! {
                changed = grew.changed(), if credit > 0 => {
                    if changed.is_err() {
                        return;
                    }
                }
                granted = credits.recv() => match granted {
                    Some(entries) => credit = (credit + u64::from(entries)).min(u64::from(MAX_CREDIT)),
                    // The reader went away.
                    None => return,
                },
                () = tokio::time::sleep(idle_every) => {
                    if !sent(&mut out, &SubscriptionFrame::Idle { cursor: position.clone() }, stall).await {
                        return;
                    }
                }
            }
        }
    }
}
