//! Reading and marking notifications.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    domain::UserId,
    error::AppError,
    paging::{Cursor, Keyset, Page},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A pal took the member's visit.
    VisitAccepted,
    /// A pal finished the member's visit; its minutes were debited.
    VisitCompleted,
    /// The member withdrew a visit the pal had accepted.
    VisitCancelled,
    /// The member's visit ran out of time.
    VisitExpired,
    /// The pal was credited for a visit.
    MinutesEarned,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VisitAccepted => "VISIT_ACCEPTED",
            Self::VisitCompleted => "VISIT_COMPLETED",
            Self::VisitCancelled => "VISIT_CANCELLED",
            Self::VisitExpired => "VISIT_EXPIRED",
            Self::MinutesEarned => "MINUTES_EARNED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::VisitAccepted,
            Self::VisitCompleted,
            Self::VisitCancelled,
            Self::VisitExpired,
            Self::MinutesEarned,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

pub mod notification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub recipient_id: Uuid,
        pub kind: String,
        pub visit_id: Uuid,
        /// The other party: the pal for the member's notices, the member for the pal's.
        pub actor_id: Option<Uuid>,
        pub minutes: i32,
        pub event_id: Uuid,
        pub occurred_at: DateTimeUtc,
        pub read_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Where a page of notifications starts: newest first, so after this time and id.
pub type NotificationCursor = Cursor<DateTime<Utc>>;

/// A page of the recipient's notifications, newest first, and how many are unread in all.
pub async fn notifications_of(
    conn: &impl ConnectionTrait,
    recipient: UserId,
    first: u64,
    after: Option<NotificationCursor>,
    unread_only: bool,
) -> Result<(Page<notification::Model>, u64), AppError> {
    let query = addressed_to(recipient, unread_only);
    let newest_first = Keyset {
        sort: notification::Column::OccurredAt,
        id: notification::Column::Id,
        order: Order::Desc,
    };
    let page = newest_first.fetch(conn, query, first, after).await?;
    let unread = unread_count(conn, recipient).await?;
    Ok((page, unread))
}

fn addressed_to(recipient: UserId, unread_only: bool) -> sea_orm::Select<notification::Entity> {
    let query =
        notification::Entity::find().filter(notification::Column::RecipientId.eq(recipient));
    if unread_only {
        query.filter(notification::Column::ReadAt.is_null())
    } else {
        query
    }
}

/// How many notifications the recipient has (or has unread).
pub async fn count_notifications_of(
    conn: &impl ConnectionTrait,
    recipient: UserId,
    unread_only: bool,
) -> Result<u64, AppError> {
    Ok(addressed_to(recipient, unread_only).count(conn).await?)
}

pub async fn unread_count(conn: &impl ConnectionTrait, recipient: UserId) -> Result<u64, AppError> {
    Ok(notification::Entity::find()
        .filter(notification::Column::RecipientId.eq(recipient))
        .filter(notification::Column::ReadAt.is_null())
        .count(conn)
        .await?)
}

/// What marking did: how many changed, and which of the given ids are not the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub updated: u64,
    pub not_found: Vec<Uuid>,
}

/// Marks the recipient's notifications `ids` (or all of them) read. Someone else's ids change
/// nothing and are reported as not found, exactly like ids that do not exist.
pub async fn mark_read(
    conn: &impl ConnectionTrait,
    recipient: UserId,
    ids: &[Uuid],
    all: bool,
) -> Result<Marked, AppError> {
    let mine = notification::Entity::find().filter(notification::Column::RecipientId.eq(recipient));
    let not_found = if all || ids.is_empty() {
        Vec::new()
    } else {
        let found: Vec<Uuid> = mine
            .clone()
            .filter(notification::Column::Id.is_in(ids.iter().copied()))
            .all(conn)
            .await?
            .into_iter()
            .map(|notification| notification.id)
            .collect();
        ids.iter()
            .filter(|id| !found.contains(id))
            .copied()
            .collect()
    };
    let mut update = notification::Entity::update_many()
        .col_expr(notification::Column::ReadAt, Expr::value(Utc::now()))
        .filter(notification::Column::RecipientId.eq(recipient))
        .filter(notification::Column::ReadAt.is_null());
    if !all {
        update = update.filter(notification::Column::Id.is_in(ids.iter().copied()));
    }
    let updated = update.exec(conn).await?.rows_affected;
    Ok(Marked { updated, not_found })
}

/// One of the recipient's notifications (`None` for anyone else's).
pub async fn find_for(
    conn: &impl ConnectionTrait,
    recipient: UserId,
    id: Uuid,
) -> Result<Option<notification::Model>, AppError> {
    Ok(notification::Entity::find_by_id(id)
        .filter(notification::Column::RecipientId.eq(recipient))
        .one(conn)
        .await?)
}
