//! What one subscription reads: with a cursor, first what the log holds after it, then the
//! instance's live feed, each event once and in order (see `events::stretch`).
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::Context;
use futures::Stream;
use tokio::sync::{Notify, broadcast::error::RecvError};

use super::context::{ApiResult, state};
use crate::{
    db::replica::Reads,
    events::{
        LogPosition,
        feed::{self, FeedEvent},
        stretch::{self, Place},
    },
};

/// What a socket learns from its subscriptions: one of them fell so far behind the feed that
/// events were lost to it, and the socket must close (a client that reconnects re-reads by query).
#[derive(Default)]
pub struct SocketSignals {
    fell_behind: AtomicBool,
    notify: Notify,
}

impl SocketSignals {
    pub async fn fell_behind(&self) {
        loop {
            let notified = self.notify.notified();
            if self.fell_behind.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn is_behind(&self) -> bool {
        self.fell_behind.load(Ordering::Acquire)
    }

    fn mark_fell_behind(&self) {
        self.fell_behind.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// The events one subscription gets: with `after` (a cursor's place), first what the log holds
/// after it, then the feed's, each event once; without, the feed's from now on. Ends (and signals
/// the socket) if this subscriber falls behind. The socket took this subscription's place on the
/// feed before it started it (`feed::Held`), so a change made after the socket handled the
/// `subscribe` is seen (see `websocket`), and taking it before reading the log leaves no gap
/// between the two.
pub(super) fn events(
    ctx: &Context<'_>,
    after: Option<Place>,
) -> ApiResult<impl Stream<Item = Arc<FeedEvent>> + use<>> {
    let held = ctx.data_opt::<feed::Held>().and_then(feed::Held::take);
    let state = state(ctx)?;
    let mut receiver: feed::Receiver = match held {
        Some(receiver) => receiver,
        None => state.live.subscribe(),
    };
    let signals = ctx.data_opt::<Arc<SocketSignals>>().cloned();
    let fell_behind = move || {
        if let Some(signals) = &signals {
            signals.mark_fell_behind();
        }
    };
    let reads = state.reads.clone();
    Ok(async_stream::stream! {
        // With a cursor: the stretches up to here were handed on, and the one the feed is
        // handing on now (whose events then come straight from it), with the last index yielded.
        let mut claimed: Option<LogPosition> = None;
        let mut current: Option<Place> = None;
        if let Some(place) = after {
            // The rest of the cursor's stretch, then on, a stretch at a time, to the log's end.
            let mut next = Some(place);
            while let Some(place) = next.take() {
                // Boxed, as below: a database read's future held in place would make every
                // subscription's stream (and an idle socket's memory) several kilobytes larger.
                let read = Box::pin(catch_up(&reads, place)).await;
                let Ok((events, to)) = read.inspect_err(|error| {
                    tracing::warn!(%error, "cannot read the log for a cursor; the client retries");
                }) else {
                    fell_behind();
                    return;
                };
                for event in events {
                    yield event;
                }
                claimed = Some(to);
                // On from the end of what was read, until nothing more is readable.
                if place.from < place.to || to != place.to {
                    next = Some(Place::alone(to));
                }
            }
        }
        loop {
            let item = match receiver.recv().await {
                Ok(item) => item,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a subscriber fell behind the live feed");
                    fell_behind();
                    break;
                }
                Err(RecvError::Closed) => break,
            };
            let Some(reached) = claimed else {
                yield item;
                continue;
            };
            let Place { from, to, index } = item.place;
            if current.is_some_and(|current| (current.from, current.to) == (from, to)) {
                current = Some(item.place);
                yield item;
            } else if to <= reached {
                // Read from the log already.
            } else if from == reached && index == 0 {
                current = Some(item.place);
                claimed = Some(to);
                yield item;
            } else {
                // The feed's stretch overlaps what this subscriber has, or it joined one midway:
                // the log has it all. First the rest of the stretch it was taking from the feed
                // (a relay that published again after a failure may have cut it short), then on.
                let mut rest = Vec::new();
                if let Some(current) = current.take() {
                    rest.push(current);
                }
                rest.push(Place { from: reached, to, index: 0 });
                for part in rest {
                    let read = Box::pin(async {
                        let source = reads.lag_tolerant().await;
                        stretch::read(source, part.from, part.to).await
                    });
                    let skip = if part.from == reached && part.to == to { 0 } else { part.index as usize + 1 };
                    match read.await {
                        Ok(events) => {
                            for (index, event) in (0..).zip(events).skip(skip) {
                                let place = Place { index, ..part };
                                yield Arc::new(FeedEvent::new(event, place));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the log for a subscriber; the client retries");
                            fell_behind();
                            return;
                        }
                    }
                }
                claimed = Some(to);
            }
        }
    })
}

/// The events after `place` in its stretch, or, for a stretch of nothing (`from == to`), the
/// next stretch readable after it; and where what was returned ends.
async fn catch_up(
    reads: &Reads,
    place: Place,
) -> Result<(Vec<Arc<FeedEvent>>, LogPosition), sea_orm::DbErr> {
    const PAGE: u64 = 500;
    const MOST: usize = 2_000;
    let source = reads.lag_tolerant().await;
    let (from, to, skip, events) = if place.from < place.to {
        let events = stretch::read(source, place.from, place.to).await?;
        (place.from, place.to, place.index as usize + 1, events)
    } else {
        match stretch::read_on(source, place.to, PAGE, MOST).await? {
            Some((events, to)) => (place.to, to, 0, events),
            None => return Ok((Vec::new(), place.to)),
        }
    };
    let caught_up = (0..)
        .zip(events)
        .skip(skip)
        .map(|(index, event)| Arc::new(FeedEvent::new(event, Place { from, to, index })))
        .collect();
    Ok((caught_up, to))
}
