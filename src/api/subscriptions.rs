//! GraphQL subscriptions: live changes to visits and new notifications, from the instance's live
//! feed (every committed event, whichever instance committed it). Each root filters the feed with
//! the same visibility rules as the queries; the visit itself resolves like any `Visit`.
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use uuid::Uuid;

use super::{
    context::{ApiError, ApiResult, caller, state},
    cursor::{CursorKey, Scope},
    loaders::{VisitKey, loader},
    objects::{Notification, Visit},
    scalars::parse_visit_id,
    subscription_events::events,
};
use crate::{
    domain::UserId,
    events::{StoredEvent, feed::FeedEvent, stretch::Place},
    notifications,
    visits::{
        self,
        changes::{ChangeKind, VisitChange},
    },
};

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
