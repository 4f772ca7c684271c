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
    loaders::{VisitKey, loader},
    objects::{Notification, Visit},
    scalars::parse_visit_id,
};
use crate::{
    domain::UserId,
    events::{
        StoredEvent,
        feed::{self, FeedEvent},
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

/// The feed's events from now on; ends (and signals the socket) if this subscriber falls behind.
/// The socket took this subscription's place on the feed before it started it (`feed::Held`), so
/// a change made after the socket handled the `subscribe` is seen (see `websocket`).
fn events(ctx: &Context<'_>) -> ApiResult<impl Stream<Item = Arc<FeedEvent>> + use<>> {
    let held = ctx.data_opt::<feed::Held>().and_then(feed::Held::take);
    let mut receiver: feed::Receiver = match held {
        Some(receiver) => receiver,
        None => state(ctx)?.live.subscribe(),
    };
    let signals = ctx.data_opt::<Arc<SocketSignals>>().cloned();
    Ok(async_stream::stream! {
        loop {
            match receiver.recv().await {
                Ok(event) => yield event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a subscriber fell behind the live feed");
                    if let Some(signals) = &signals {
                        signals.mark_fell_behind();
                    }
                    break;
                }
                Err(RecvError::Closed) => break,
            }
        }
    })
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
}

#[Object]
impl VisitEvent {
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
    mut pick: impl FnMut(&VisitChange) -> Pick + Send + 'static,
) -> impl Stream<Item = VisitEvent> + Send + 'static {
    async_stream::stream! {
        for await item in events {
            let Some(change) = VisitChange::from_event(&item.event) else { continue };
            let last = match pick(&change) {
                Pick::Skip => continue,
                Pick::Send => false,
                Pick::SendLast => true,
            };
            let visible = change.is_visible_to(viewer);
            yield VisitEvent { change, visible };
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
        id: ID,
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let events = events(ctx)?;
        let viewer = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        // The same answer as `visit(id)` for a visit you may not see: it does not exist for you.
        let state = state(ctx)?;
        visits::find_visible(&state.db, viewer, visit_id, &state.deadlines()).await?;
        Ok(visit_events(events, viewer, move |change| {
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
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let events = events(ctx)?;
        let viewer = caller(ctx).await?.user_id;
        Ok(visit_events(events, viewer, move |change| {
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
    ) -> Result<impl Stream<Item = VisitEvent> + use<>, ApiError> {
        let events = events(ctx)?;
        let viewer = caller(ctx).await?.user_id;
        Ok(visit_events(events, viewer, move |change| {
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
        let events = events(ctx)?;
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
