//! GraphQL subscriptions: live changes to visits and new notifications, from the instance's live
//! feed (every committed event, whichever instance committed it). Each root filters the feed with
//! the same visibility rules as the queries; the visit itself resolves like any `Visit`.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{Context, Enum, ID, Object, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::{Notify, broadcast::error::RecvError};
use uuid::Uuid;

use super::{
    context::{ApiError, ApiResult, caller, state},
    cursor::{CursorKey, Scope},
    loaders::{VisitKey, loader},
    objects::{Notification, Visit},
    scalars::parse_visit_id,
};
use crate::{
    db::replica::Reads,
    domain::UserId,
    events::{
        LogPosition, StoredEvent,
        feed::{self, FeedEvent},
        stretch::{self, Place},
    },
    notifications,
    visits::{
        self,
        changes::{ChangeKind, VisitChange},
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
fn events(
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

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum VisitEventType {
    /// A member asked for the visit.
    Requested,
    /// A pal took it.
    Accepted,
    /// The pal finished it and was paid.
    Completed,
    /// Its member withdrew it.
    Cancelled,
    /// Its pal left the service; it is open again.
    Released,
    /// Its time ran out before it was completed.
    Expired,
}

impl From<ChangeKind> for VisitEventType {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::Requested => Self::Requested,
            ChangeKind::Accepted => Self::Accepted,
            ChangeKind::Completed => Self::Completed,
            ChangeKind::Cancelled => Self::Cancelled,
            ChangeKind::Released => Self::Released,
            ChangeKind::Expired => Self::Expired,
        }
    }
}

/// One change to a visit, as it happened.
pub struct VisitEvent {
    change: VisitChange,
    /// The subscriber may see the visit after the change (else `visit` is null: it left their view).
    visible: bool,
    place: Place,
    cursors: Arc<Cursors>,
}

/// What a subscription's cursors are made with.
struct Cursors {
    key: CursorKey,
    scope: Scope,
}

impl Cursors {
    /// Checks a client's `after` against what this subscription is (and the log keeps).
    fn new(
        ctx: &Context<'_>,
        field: &str,
        arguments: &[&str],
        viewer: UserId,
        after: Option<&str>,
    ) -> ApiResult<(Arc<Self>, Option<Place>)> {
        let state = state(ctx)?;
        let cursors = Self {
            key: CursorKey::from_secret(state.config.jwt_secret()),
            scope: Scope::new(field, arguments, viewer.0),
        };
        // See the `danger-ignore-cursor` feature: true only in a build made to prove the harness.
        let after = after.filter(|_| !cfg!(feature = "danger-ignore-cursor"));
        let after = after
            .map(|cursor| {
                cursors.key.decode(
                    cursor,
                    &cursors.scope,
                    state.config.events.outbox_retention,
                    Utc::now(),
                )
            })
            .transpose()?;
        Ok((Arc::new(cursors), after))
    }
}

#[Object]
impl VisitEvent {
    /// Where this event sits in the log. Pass the last one you received as `after` when you
    /// subscribe again (after a reconnect, on any instance) to get what you missed first, in
    /// order and once each.
    async fn cursor(&self) -> String {
        self.cursors
            .key
            .encode(&self.cursors.scope, self.place, self.change.occurred_at)
    }

    /// The event's id: the same on every instance and in every subscription.
    async fn event_id(&self) -> ID {
        ID(self.change.event_id.to_string())
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> VisitEventType {
        self.change.kind.into()
    }

    async fn occurred_at(&self) -> DateTime<Utc> {
        self.change.occurred_at
    }

    async fn visit_id(&self) -> ID {
        ID(self.change.visit_id.to_string())
    }

    /// The visit as this change left it; null when you may no longer see it (another pal took a
    /// visit you were watching in the open list, say).
    async fn visit(&self, ctx: &Context<'_>) -> ApiResult<Option<Visit>> {
        if !self.visible {
            return Ok(None);
        }
        let row = loader(ctx).load_one(VisitKey(self.change.visit_id)).await?;
        Ok(Some(Visit(self.change.applied_to(row))))
    }
}

/// What a visit root does with one change.
enum Pick {
    Skip,
    Send,
    /// Send it, then complete: it took the visit out of the subscriber's view.
    SendLast,
}

/// The visit changes among `events` that `pick` keeps, shown to `viewer` as a query would show
/// them (the visit only while they may see it).
fn visit_events(
    events: impl Stream<Item = Arc<FeedEvent>> + Send + 'static,
    viewer: UserId,
    cursors: Arc<Cursors>,
    mut pick: impl FnMut(&VisitChange) -> Pick + Send + 'static,
) -> impl Stream<Item = VisitEvent> + Send + 'static {
    async_stream::stream! {
        for await item in events {
            let Some(change) = item.read_as(VisitChange::from_event) else { continue };
            let change = change.clone();
            let last = match pick(&change) {
                Pick::Skip => continue,
                Pick::Send => false,
                Pick::SendLast => true,
            };
            let visible = change.is_visible_to(viewer);
            yield VisitEvent { change, visible, place: item.place, cursors: cursors.clone() };
            if last {
                break;
            }
        }
    }
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Changes to one visit you may see. When a change takes it out of your view, that change is
    /// sent (with `visit: null`) and the subscription completes.
    async fn visit_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The visit's id.")] id: ID,
        #[graphql(desc = "A `cursor` this subscription gave: start just after it.")] after: Option<
            String,
        >,
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let viewer = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        let (cursors, after) = Cursors::new(
            ctx,
            "visitUpdated",
            &[&visit_id.0.to_string()],
            viewer,
            after.as_deref(),
        )?;
        let events = events(ctx, after)?;
        // The same answer as `visit(id)` for a visit you may not see: it does not exist for you.
        let state = state(ctx)?;
        visits::find_visible(&state.db, viewer, visit_id, &state.deadlines()).await?;
        Ok(visit_events(events, viewer, cursors, move |change| {
            if change.visit_id != visit_id {
                return Pick::Skip;
            }
            if change.is_visible_to(viewer) {
                Pick::Send
            } else {
                Pick::SendLast
            }
        }))
    }

    /// Every change to a visit you are (or, until that change, were) the member or the pal of.
    async fn my_visits(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A `cursor` this subscription gave: start just after it.")] after: Option<
            String,
        >,
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let viewer = caller(ctx).await?.user_id;
        let (cursors, after) = Cursors::new(ctx, "myVisits", &[], viewer, after.as_deref())?;
        let events = events(ctx, after)?;
        Ok(visit_events(events, viewer, cursors, move |change| {
            if change.concerns(viewer) {
                Pick::Send
            } else {
                Pick::Skip
            }
        }))
    }

    /// The open list, live: visits entering it (requested by another member, or released by their
    /// pal) and visits leaving it (taken, completed or withdrawn).
    async fn open_visits(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A `cursor` this subscription gave: start just after it.")] after: Option<
            String,
        >,
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let viewer = caller(ctx).await?.user_id;
        let (cursors, after) = Cursors::new(ctx, "openVisits", &[], viewer, after.as_deref())?;
        let events = events(ctx, after)?;
        Ok(visit_events(events, viewer, cursors, move |change| {
            let (before, after) = change.open_list(viewer, Utc::now().date_naive());
            if before || after {
                Pick::Send
            } else {
                Pick::Skip
            }
        }))
    }

    /// Each notification as it is added for you.
    async fn notification_added(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Notification> + use<>, ApiError> {
        let events = events(ctx, None)?;
        let recipient = caller(ctx).await?.user_id;
        let db = state(ctx)?.db.clone();
        Ok(async_stream::stream! {
            for await item in events {
                let Some(id) = notification_for(&item.event, recipient) else { continue };
                match notifications::find_for(&db, recipient, id).await {
                    Ok(Some(row)) => yield Notification(row),
                    // Marked, replaced by a rebuild of the read model, or the account went.
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot load a new notification"),
                }
            }
        })
    }
}

/// The id of the notification a `notification.added` event announces to `recipient`.
fn notification_for(event: &StoredEvent, recipient: UserId) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Facts {
        notification_id: Uuid,
        recipient_id: Uuid,
    }
    if event.event_type != "notification.added" {
        return None;
    }
    let facts = <Facts as serde::Deserialize>::deserialize(&event.payload).ok()?;
    (facts.recipient_id == recipient.0).then_some(facts.notification_id)
}
