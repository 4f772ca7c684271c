//! GraphQL for notifications: the caller's list and marking them read.
use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};

use super::{
    context::{ApiResult, caller, state},
    limits,
    objects::Notification,
    pagination::{PageInfo, TotalCount, decode_cursor, encode_cursor, page_size},
};
use crate::{
    error::AppError,
    notifications::{self, NotificationCursor, notification},
};

/// The most ids one `markNotificationsRead` takes.
const MAX_IDS: usize = 100;

#[derive(SimpleObject)]
pub struct NotificationEdge {
    pub cursor: String,
    pub node: Notification,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct NotificationConnection {
    #[graphql(skip)]
    pub total_count: TotalCount,
    /// How many of your notifications are unread, whatever the filter.
    pub unread_count: u64,
    pub edges: Vec<NotificationEdge>,
    pub page_info: PageInfo,
}

#[derive(InputObject)]
pub struct MarkNotificationsReadInput {
    /// Notifications to mark read (at most 100).
    pub ids: Option<Vec<ID>>,
    /// Mark every notification read instead.
    pub all: Option<bool>,
}

#[derive(SimpleObject)]
pub struct MarkNotificationsReadPayload {
    /// How many notifications changed from unread to read.
    pub updated: u64,
    /// Ids given that are not notifications of yours.
    pub not_found: Vec<ID>,
    pub unread_count: u64,
}

#[ComplexObject]
impl NotificationConnection {
    /// How many notifications match (all, or the unread ones with `unreadOnly`). Counted only
    /// when asked for.
    #[graphql(complexity = "limits::TOTAL_COUNT")]
    async fn total_count(&self) -> ApiResult<u64> {
        Ok(self.total_count.get().await?)
    }
}

fn list_name(unread_only: bool) -> &'static str {
    if unread_only {
        "notifications:unread"
    } else {
        "notifications"
    }
}

#[derive(Default)]
pub struct NotificationsQuery;

#[Object]
impl NotificationsQuery {
    /// Your notifications, newest first. `first` is 1 to 100 (default 20).
    #[graphql(complexity = "limits::connection(__field, first, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        unread_only: Option<bool>,
    ) -> ApiResult<NotificationConnection> {
        let recipient = caller(ctx).await?.user_id;
        let first = page_size(first)?;
        let unread_only = unread_only.unwrap_or(false);
        let list = list_name(unread_only);
        let after: Option<NotificationCursor> = after
            .as_deref()
            .map(|cursor| decode_cursor(list, cursor))
            .transpose()?;
        // A read model, written moments after the events it follows: a moment's lag more from a
        // replica changes nothing for the reader.
        let db = state(ctx)?.reads.lag_tolerant().await.clone();
        let (page, unread_count) =
            notifications::notifications_of(&db, recipient, first, after, unread_only).await?;
        let notification_cursor = |notification: &notification::Model| {
            encode_cursor(list, &notification.occurred_at, notification.id)
        };
        let end_cursor = page.items.last().map(notification_cursor);
        Ok(NotificationConnection {
            total_count: TotalCount::later(async move {
                notifications::count_notifications_of(&db, recipient, unread_only).await
            }),
            unread_count,
            edges: page
                .items
                .into_iter()
                .map(|notification| NotificationEdge {
                    cursor: notification_cursor(&notification),
                    node: Notification(notification),
                })
                .collect(),
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor,
            },
        })
    }
}

#[derive(Default)]
pub struct NotificationsMutation;

#[Object]
impl NotificationsMutation {
    /// Marks notifications read: the given `ids`, or `all: true`. Ids that are not yours change
    /// nothing and come back in `notFound`.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        input: MarkNotificationsReadInput,
    ) -> ApiResult<MarkNotificationsReadPayload> {
        let recipient = caller(ctx).await?.user_id;
        let all = input.all.unwrap_or(false);
        let ids = input.ids.unwrap_or_default();
        let both_or_neither = all != ids.is_empty();
        if both_or_neither {
            return Err(AppError::bad_input("ids", "give either ids or all: true").into());
        }
        if ids.len() > MAX_IDS {
            return Err(AppError::bad_input("ids", format!("at most {MAX_IDS} at a time")).into());
        }
        // An id that is not even a uuid is no notification of yours either.
        let given: Vec<(ID, Option<uuid::Uuid>)> = ids
            .into_iter()
            .map(|id| {
                let uuid = id.parse().ok();
                (id, uuid)
            })
            .collect();
        let parsed: Vec<uuid::Uuid> = given.iter().filter_map(|(_, uuid)| *uuid).collect();
        let db = &state(ctx)?.db;
        let marked = notifications::mark_read(db, recipient, &parsed, all).await?;
        let not_found = given
            .into_iter()
            .filter(|(_, uuid)| uuid.is_none_or(|uuid| marked.not_found.contains(&uuid)))
            .map(|(id, _)| id)
            .collect();
        Ok(MarkNotificationsReadPayload {
            updated: marked.updated,
            not_found,
            unread_count: notifications::unread_count(db, recipient).await?,
        })
    }
}
