//! GraphQL for visits: the `Visit` type, its queries and the four mutations.
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::TransactionTrait;
use uuid::Uuid;

use super::{
    context::{ApiResult, caller, state},
    identity::User,
    ledger::Transaction,
    loaders::{TasksKey, UserKey, loader},
    pagination::{PageInfo, decode_cursor, encode_cursor, page_size},
    scalars::Date,
};
use crate::{
    error::AppError,
    visits::{self, VisitCursor, VisitRequest, entities::visit},
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
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::visits::VisitRole")]
pub enum VisitRole {
    /// Visits you requested.
    Member,
    /// Visits you accepted or completed as a pal.
    Pal,
    /// Requested visits of other members, waiting for a pal.
    Open,
}

#[derive(InputObject, Default)]
pub struct VisitFilter {
    pub status: Option<VisitStatus>,
    pub role: Option<VisitRole>,
}

#[derive(InputObject)]
pub struct TaskInput {
    /// 1 to 100 characters.
    pub name: String,
    /// Up to 1,000 characters.
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct RequestVisitInput {
    /// Today or later (UTC).
    pub date: Date,
    /// Length of the visit, 1 to 480 minutes.
    pub minutes: i32,
    /// 1 to 20 tasks.
    pub tasks: Vec<TaskInput>,
    /// Optional, chosen by the client: a retry with the same key and input returns the same visit
    /// instead of booking twice; the same key with other input is a `CONFLICT`.
    pub idempotency_key: Option<String>,
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
        self.0.minutes
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
        load_user(ctx, self.0.member_id).await
    }

    /// Who accepted or completed it, if anyone has.
    async fn pal(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        match self.0.pal_id {
            Some(pal_id) => Ok(Some(load_user(ctx, pal_id).await?)),
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

pub async fn load_user(ctx: &Context<'_>, user_id: Uuid) -> ApiResult<User> {
    let viewer = caller(ctx).await?.user_id;
    let model = loader(ctx)
        .load_one(UserKey(user_id))
        .await?
        .ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("user {user_id} referenced but missing"))
        })?;
    Ok(User::new(model, Some(viewer)))
}

#[derive(SimpleObject)]
pub struct VisitEdge {
    pub cursor: String,
    pub node: Visit,
}

#[derive(SimpleObject)]
pub struct VisitConnection {
    /// How many visits match the filter, across all pages.
    pub total_count: u64,
    pub edges: Vec<VisitEdge>,
    pub page_info: PageInfo,
}

fn visit_cursor(visit: &visit::Model) -> String {
    encode_cursor(&format!("{}|{}", visit.date, visit.id))
}

fn parse_visit_cursor(cursor: &str) -> Result<VisitCursor, AppError> {
    let (date, id) = decode_cursor(cursor)?;
    let invalid = || AppError::bad_input("after", "is not a cursor from this API");
    Ok(VisitCursor {
        date: date.parse::<NaiveDate>().map_err(|_| invalid())?,
        id: id.parse().map_err(|_| invalid())?,
    })
}

pub fn parse_id(id: &ID, field: &str) -> Result<Uuid, AppError> {
    id.parse()
        .map_err(|_| AppError::bad_input(field, "is not a valid id"))
}

#[derive(Default)]
pub struct VisitsQuery;

#[Object]
impl VisitsQuery {
    /// One visit you can see: your own, one you took as a pal, or an open request.
    async fn visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let viewer = caller(ctx).await?.user_id;
        let visit = visits::find_visible(&state(ctx)?.db, viewer, parse_id(&id, "id")?).await?;
        Ok(Visit(visit))
    }

    /// Visits you can see, by date then id. `first` is at most 100 (default 20).
    async fn visits(
        &self,
        ctx: &Context<'_>,
        filter: Option<VisitFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<VisitConnection> {
        let viewer = caller(ctx).await?.user_id;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_visit_cursor).transpose()?;
        let filter = filter.unwrap_or_default();
        let filter = visits::VisitFilter {
            status: filter.status.map(Into::into),
            role: filter.role.map(Into::into),
        };
        let page = visits::visible_visits(&state(ctx)?.db, viewer, filter, first, after).await?;
        let end_cursor = page.items.last().map(visit_cursor);
        Ok(VisitConnection {
            total_count: page.total_count,
            edges: page
                .items
                .into_iter()
                .map(|visit| VisitEdge {
                    cursor: visit_cursor(&visit),
                    node: Visit(visit),
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
pub struct VisitsMutation;

#[Object]
impl VisitsMutation {
    /// Asks for a visit. Refused with `INSUFFICIENT_MINUTES` when its minutes exceed your balance less
    /// the minutes of your requested and accepted visits.
    async fn request_visit(&self, ctx: &Context<'_>, input: RequestVisitInput) -> ApiResult<Visit> {
        let member_id = caller(ctx).await?.user_id;
        let request = VisitRequest::new(
            input.date.0,
            input.minutes,
            input
                .tasks
                .into_iter()
                .map(|task| (task.name, task.description))
                .collect(),
            input.idempotency_key,
        );
        let txn = state(ctx)?.db.begin().await?;
        let visit = visits::request_visit(&txn, member_id, request).await?;
        txn.commit().await?;
        Ok(Visit(visit))
    }

    /// Claims someone else's requested visit; only you may then complete it.
    async fn accept_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let pal_id = caller(ctx).await?.user_id;
        let visit_id = parse_id(&id, "id")?;
        let txn = state(ctx)?.db.begin().await?;
        let visit = visits::accept_visit(&txn, pal_id, visit_id).await?;
        txn.commit().await?;
        Ok(Visit(visit))
    }

    /// Completes someone else's visit (requested, or accepted by you): the member pays its minutes
    /// and you are credited them less the overhead fee.
    async fn complete_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Transaction> {
        let pal_id = caller(ctx).await?.user_id;
        let visit_id = parse_id(&id, "id")?;
        let state = state(ctx)?;
        let txn = state.db.begin().await?;
        let transaction =
            visits::complete_visit(&txn, pal_id, visit_id, state.config.overhead_percent).await?;
        txn.commit().await?;
        Ok(Transaction(transaction))
    }

    /// Withdraws your visit while it is requested or accepted, freeing its minutes.
    async fn cancel_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let member_id = caller(ctx).await?.user_id;
        let visit_id = parse_id(&id, "id")?;
        let txn = state(ctx)?.db.begin().await?;
        let visit = visits::cancel_visit(&txn, member_id, visit_id).await?;
        txn.commit().await?;
        Ok(Visit(visit))
    }
}
