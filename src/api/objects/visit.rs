//! The `Visit` type, its status and its tasks.
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::User;
use crate::{
    api::{
        context::ApiResult,
        loaders::{TasksKey, loader},
        scalars::Date,
    },
    visits::entities::visit,
};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::visits::VisitStatus")]
pub enum VisitStatus {
    /// Waiting for a pal; its minutes are held from the member's available minutes.
    Requested,
    /// A pal has claimed it; only they may complete it.
    Accepted,
    /// Done and paid.
    Completed,
    /// Withdrawn by the member; nothing was paid.
    Cancelled,
    /// Not completed by the end of its date plus the grace days; its minutes are free again.
    Expired,
}

/// Something to do during a visit.
#[derive(SimpleObject)]
pub struct Task {
    pub name: String,
    pub description: Option<String>,
}

/// A visit a member asked for.
pub struct Visit(pub visit::Model);

#[Object]
impl Visit {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn date(&self) -> Date {
        Date(self.0.date)
    }

    async fn minutes(&self) -> i32 {
        self.0.minutes.0
    }

    async fn status(&self) -> VisitStatus {
        self.0.status.into()
    }

    async fn tasks(&self, ctx: &Context<'_>) -> ApiResult<Vec<Task>> {
        let tasks = loader(ctx)
            .load_one(TasksKey(self.0.id))
            .await?
            .unwrap_or_default();
        Ok(tasks
            .into_iter()
            .map(|task| Task {
                name: task.name,
                description: task.description,
            })
            .collect())
    }

    /// Who asked for the visit.
    async fn member(&self, ctx: &Context<'_>) -> ApiResult<User> {
        User::load(ctx, self.0.member_id).await
    }

    /// Who accepted or completed it, if anyone has.
    async fn pal(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        match self.0.pal_id {
            Some(pal_id) => Ok(Some(User::load(ctx, pal_id).await?)),
            None => Ok(None),
        }
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}
