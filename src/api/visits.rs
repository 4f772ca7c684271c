//! GraphQL for visits: listing them, and the four mutations of their life.
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Object, SimpleObject};
use sea_orm::ActiveEnum;

use super::{
    context::{ApiResult, caller, state},
    limits,
    objects::{Transaction, Visit, VisitStatus},
    pagination::{PageInfo, TotalCount, decode_cursor, encode_cursor, page_size},
    scalars::{Date, parse_visit_id},
};
use crate::visits::{self, VisitCursor, VisitRequest, entities::visit};

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

#[derive(SimpleObject)]
pub struct VisitEdge {
    pub cursor: String,
    pub node: Visit,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct VisitConnection {
    #[graphql(skip)]
    pub total_count: TotalCount,
    pub edges: Vec<VisitEdge>,
    pub page_info: PageInfo,
}

#[ComplexObject]
impl VisitConnection {
    /// How many visits match the filter, across all pages. Counted only when asked for (it costs
    /// as much as a page of 100 in the complexity budget).
    #[graphql(complexity = "limits::TOTAL_COUNT")]
    async fn total_count(&self) -> ApiResult<u64> {
        Ok(self.total_count.get().await?)
    }
}

/// The list a cursor belongs to: its role and status, since a position in one means nothing in
/// another (`visits:open:any`, `visits:member:EXPIRED`, ...).
fn list_name(filter: &visits::VisitFilter) -> String {
    let role = match filter.role {
        Some(visits::VisitRole::Member) => "member",
        Some(visits::VisitRole::Pal) => "pal",
        Some(visits::VisitRole::Open) => "open",
        None => "all",
    };
    let status = filter
        .status
        .map_or_else(|| "any".to_string(), |status| status.to_value());
    format!("visits:{role}:{status}")
}

#[derive(Default)]
pub struct VisitsQuery;

#[Object]
impl VisitsQuery {
    /// One visit you can see: your own, one you took as a pal, or an open request.
    async fn visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let viewer = caller(ctx).await?.user_id;
        let state = state(ctx)?;
        let visit_id = parse_visit_id(&id, "id")?;
        let visit = visits::find_visible(&state.db, viewer, visit_id, &state.deadlines()).await?;
        Ok(Visit(visit))
    }

    /// Visits you can see, soonest first (then by id); the open list holds requests dated today
    /// or later. `first` is 1 to 100 (default 20); `after` is an `endCursor` of the same filter.
    #[graphql(complexity = "limits::connection(__field, first, child_complexity)")]
    async fn visits(
        &self,
        ctx: &Context<'_>,
        filter: Option<VisitFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<VisitConnection> {
        let viewer = caller(ctx).await?.user_id;
        let first = page_size(first)?;
        let filter = filter.unwrap_or_default();
        let filter = visits::VisitFilter {
            status: filter.status.map(Into::into),
            role: filter.role.map(Into::into),
        };
        let list = list_name(&filter);
        let after: Option<VisitCursor> = after
            .as_deref()
            .map(|cursor| decode_cursor(&list, cursor))
            .transpose()?;
        let state = state(ctx)?;
        let deadlines = state.deadlines();
        // Mostly other people's visits (the open list): a replica that has caught up with the
        // caller serves it.
        let db = state.reads.lag_tolerant().await.clone();
        let page = visits::visible_visits(&db, viewer, filter, &deadlines, first, after).await?;
        let cursor_of = |visit: &visit::Model| encode_cursor(&list, &visit.date, visit.id.0);
        let end_cursor = page.items.last().map(cursor_of);
        Ok(VisitConnection {
            total_count: TotalCount::later(async move {
                visits::count_visible_visits(&db, viewer, filter, &deadlines).await
            }),
            edges: page
                .items
                .into_iter()
                .map(|visit| VisitEdge {
                    cursor: cursor_of(&visit),
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
        let state = state(ctx)?;
        let deadlines = state.deadlines();
        let visit = state
            .retrying(|| async {
                let txn = state.begin().await?;
                let visit = visits::request_visit(&txn, member_id, &request, &deadlines).await?;
                txn.commit().await?;
                Ok(visit)
            })
            .await?;
        Ok(Visit(visit))
    }

    /// Claims someone else's requested visit; only you may then complete it.
    async fn accept_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let pal_id = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        let state = state(ctx)?;
        let deadlines = state.deadlines();
        let visit = state
            .retrying(|| async {
                let txn = state.begin().await?;
                let visit = visits::accept_visit(&txn, pal_id, visit_id, &deadlines).await?;
                txn.commit().await?;
                Ok(visit)
            })
            .await?;
        Ok(Visit(visit))
    }

    /// Completes someone else's visit (requested, or accepted by you) until the end of its date
    /// plus the grace days: the member pays its minutes and you are credited them less the fee.
    async fn complete_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Transaction> {
        let pal_id = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        let state = state(ctx)?;
        let deadlines = state.deadlines();
        let transaction = state
            .retrying(|| async {
                let txn = state.begin().await?;
                let transaction = visits::complete_visit(
                    &txn,
                    pal_id,
                    visit_id,
                    state.config.visits.overhead_percent,
                    &deadlines,
                )
                .await?;
                txn.commit().await?;
                Ok(transaction)
            })
            .await?;
        Ok(Transaction(transaction))
    }

    /// Withdraws your visit while it is requested or accepted, freeing its minutes.
    async fn cancel_visit(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Visit> {
        let member_id = caller(ctx).await?.user_id;
        let visit_id = parse_visit_id(&id, "id")?;
        let state = state(ctx)?;
        let deadlines = state.deadlines();
        let visit = state
            .retrying(|| async {
                let txn = state.begin().await?;
                let visit = visits::cancel_visit(&txn, member_id, visit_id, &deadlines).await?;
                txn.commit().await?;
                Ok(visit)
            })
            .await?;
        Ok(Visit(visit))
    }
}
