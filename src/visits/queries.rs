//! Reading visits: who may see which, lists by role, and batch look-ups for the api's loaders.
use std::collections::HashMap;

use chrono::NaiveDate;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::{VisitStatus, task, visit};
use crate::{
    error::AppError,
    paging::{Cursor, Keyset, Page},
};

/// Outstanding minutes of many members in one query (for batch loading); absent members have none.
pub async fn outstanding_minutes_of(
    conn: &impl ConnectionTrait,
    member_ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, i32>, AppError> {
    let rows: Vec<(Uuid, Option<i64>)> = visit::Entity::find()
        .select_only()
        .column(visit::Column::MemberId)
        .column_as(visit::Column::Minutes.sum(), "total")
        .filter(visit::Column::MemberId.is_in(member_ids))
        .filter(visit::Column::Status.is_in(VisitStatus::OUTSTANDING))
        .group_by(visit::Column::MemberId)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(member, total)| {
            Ok((
                member,
                i32::try_from(total.unwrap_or(0)).map_err(AppError::internal)?,
            ))
        })
        .collect()
}

/// A member sees their visits, a pal the ones they took, and everyone sees requested ones.
pub fn is_visible_to(visit: &visit::Model, viewer: Uuid) -> bool {
    may_see(viewer, visit.member_id, visit.pal_id, Some(visit.status))
}

/// The rule itself, for a visit in any state (`None`: it did not exist yet); live updates apply
/// it to the states before and after a change.
pub fn may_see(viewer: Uuid, member: Uuid, pal: Option<Uuid>, status: Option<VisitStatus>) -> bool {
    member == viewer || pal == Some(viewer) || status == Some(VisitStatus::Requested)
}

pub async fn find_visible(
    conn: &impl ConnectionTrait,
    viewer: Uuid,
    visit_id: Uuid,
) -> Result<visit::Model, AppError> {
    visit::Entity::find_by_id(visit_id)
        .one(conn)
        .await?
        .filter(|visit| is_visible_to(visit, viewer))
        .ok_or(AppError::NotFound("visit"))
}

pub async fn find_visits(
    conn: &impl ConnectionTrait,
    ids: Vec<Uuid>,
) -> Result<Vec<visit::Model>, AppError> {
    Ok(visit::Entity::find()
        .filter(visit::Column::Id.is_in(ids))
        .all(conn)
        .await?)
}

/// Tasks of many visits in one query, in their listed order.
pub async fn tasks_of(
    conn: &impl ConnectionTrait,
    visit_ids: Vec<Uuid>,
) -> Result<Vec<task::Model>, AppError> {
    Ok(task::Entity::find()
        .filter(task::Column::VisitId.is_in(visit_ids))
        .order_by_asc(task::Column::VisitId)
        .order_by_asc(task::Column::Position)
        .all(conn)
        .await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitRole {
    /// Visits the viewer requested.
    Member,
    /// Visits the viewer accepted or completed.
    Pal,
    /// Requested visits of others, waiting for a pal.
    Open,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct VisitFilter {
    pub status: Option<VisitStatus>,
    pub role: Option<VisitRole>,
}

/// Where a page of visits starts: after this date and id, in (date, id) order.
pub type VisitCursor = Cursor<NaiveDate>;

pub async fn visible_visits(
    conn: &impl ConnectionTrait,
    viewer: Uuid,
    filter: VisitFilter,
    first: u64,
    after: Option<VisitCursor>,
) -> Result<Page<visit::Model>, AppError> {
    let requested = visit::Column::Status.eq(VisitStatus::Requested);
    let mut condition = match filter.role {
        Some(VisitRole::Member) => Condition::all().add(visit::Column::MemberId.eq(viewer)),
        Some(VisitRole::Pal) => Condition::all().add(visit::Column::PalId.eq(viewer)),
        Some(VisitRole::Open) => Condition::all()
            .add(requested)
            .add(visit::Column::MemberId.ne(viewer)),
        None => Condition::any()
            .add(visit::Column::MemberId.eq(viewer))
            .add(visit::Column::PalId.eq(viewer))
            .add(requested),
    };
    if let Some(status) = filter.status {
        condition = Condition::all()
            .add(condition)
            .add(visit::Column::Status.eq(status));
    }
    let by_date = Keyset {
        sort: visit::Column::Date,
        id: visit::Column::Id,
        order: Order::Asc,
    };
    let visible = visit::Entity::find().filter(condition);
    Ok(by_date.fetch(conn, visible, first, after).await?)
}
