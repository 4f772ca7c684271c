//! The `Notification` type: something that happened to one of the caller's visits.
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use super::{User, Visit};
use crate::{
    api::{
        context::{ApiResult, caller},
        loaders::{VisitKey, loader},
    },
    domain::{UserId, VisitId},
    notifications::{self, notification},
    visits,
};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum NotificationKind {
    /// A pal took your visit (`actor` is the pal).
    VisitAccepted,
    /// A pal finished your visit; `minutes` were debited (`actor` is the pal).
    VisitCompleted,
    /// A member withdrew a visit you had accepted (`actor` is the member).
    VisitCancelled,
    /// Your visit ran out of time; its minutes are free again.
    VisitExpired,
    /// You were credited `minutes` for a visit (`actor` is its member).
    MinutesEarned,
}

impl From<notifications::Kind> for NotificationKind {
    fn from(kind: notifications::Kind) -> Self {
        match kind {
            notifications::Kind::VisitAccepted => Self::VisitAccepted,
            notifications::Kind::VisitCompleted => Self::VisitCompleted,
            notifications::Kind::VisitCancelled => Self::VisitCancelled,
            notifications::Kind::VisitExpired => Self::VisitExpired,
            notifications::Kind::MinutesEarned => Self::MinutesEarned,
        }
    }
}

pub struct Notification(pub notification::Model);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn kind(&self) -> Option<NotificationKind> {
        notifications::Kind::parse(&self.0.kind).map(Into::into)
    }

    /// Minutes the notice is about: the visit's length, or what you earned.
    async fn minutes(&self) -> i32 {
        self.0.minutes
    }

    /// When it happened.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }

    async fn read(&self) -> bool {
        self.0.read_at.is_some()
    }

    async fn visit_id(&self) -> ID {
        ID(self.0.visit_id.to_string())
    }

    /// The visit as it is now, if you may still see it.
    async fn visit(&self, ctx: &Context<'_>) -> ApiResult<Option<Visit>> {
        let viewer = caller(ctx).await?.user_id;
        let visit = loader(ctx)
            .load_one(VisitKey(VisitId(self.0.visit_id)))
            .await?;
        Ok(visit
            .filter(|visit| visits::is_visible_to(visit, viewer))
            .map(Visit))
    }

    /// The other party, with their name as it is now.
    async fn actor(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        match self.0.actor_id {
            Some(actor) => Ok(Some(User::load(ctx, UserId(actor)).await?)),
            None => Ok(None),
        }
    }
}
