//! Reading visits: who may see which, lists by role, and batch look-ups for the api's loaders.
use std::collections::HashMap;

use chrono::NaiveDate;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

use super::{
    Deadlines,
    entities::{VisitStatus, task, visit},
};
use crate::{
    domain::{Minutes, UserId, VisitId},
    error::AppError,
    paging::{Cursor, Keyset, Page},
};

/// Outstanding minutes of many members in one query (for batch loading); absent members have none.
pub async fn outstanding_minutes_of(
    conn: &impl ConnectionTrait,
    member_ids: Vec<UserId>,
    deadlines: &Deadlines,
) -> Result<HashMap<UserId, Minutes>, AppError> {
    let rows: Vec<(UserId, Option<i64>)> = visit::Entity::find()
        .select_only()
        .column(visit::Column::MemberId)
        .column_as(visit::Column::Minutes.sum(), "total")
        .filter(visit::Column::MemberId.is_in(member_ids))
        .filter(visit::Column::Status.is_in(VisitStatus::OUTSTANDING))
        // Expired visits hold nothing, whether or not the sweeper has marked them yet.
        .filter(visit::Column::Date.gte(deadlines.expired_before))
        .group_by(visit::Column::MemberId)
        .into_tuple()
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|(member, total)| {
            Ok((
                member,
                Minutes(i32::try_from(total.unwrap_or(0)).map_err(AppError::internal)?),
            ))
        })
        .collect()
}

/// A member sees their visits, a pal the ones they took, and everyone sees requested ones.
pub fn is_visible_to(visit: &visit::Model, viewer: UserId) -> bool {
    may_see(viewer, visit.member_id, visit.pal_id, Some(visit.status))
}

/// The rule itself, for a visit in any state (`None`: it did not exist yet); live updates apply
/// it to the states before and after a change.
pub fn may_see(
    viewer: UserId,
    member: UserId,
    pal: Option<UserId>,
    status: Option<VisitStatus>,
) -> bool {
    member == viewer || pal == Some(viewer) || status == Some(VisitStatus::Requested)
}

/// The visit as it stands today, if `viewer` may see it (an expired request is no longer open to
/// others).
pub async fn find_visible(
    conn: &impl ConnectionTrait,
    viewer: UserId,
    visit_id: VisitId,
    deadlines: &Deadlines,
) -> Result<visit::Model, AppError> {
    visit::Entity::find_by_id(visit_id)
        .one(conn)
        .await?
        .map(|visit| deadlines.settle(visit))
        .filter(|visit| is_visible_to(visit, viewer))
        .ok_or(AppError::NotFound("visit"))
}

pub async fn find_visits(
    conn: &impl ConnectionTrait,
    ids: Vec<Uuid>,
    deadlines: &Deadlines,
) -> Result<Vec<visit::Model>, AppError> {
    let found = visit::Entity::find()
        .filter(visit::Column::Id.is_in(ids))
        .all(conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|visit| deadlines.settle(visit))
        .collect())
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
    /// Requested visits of others dated today or later, waiting for a pal.
    Open,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitFilter {
    pub status: Option<VisitStatus>,
    pub role: Option<VisitRole>,
}

/// Where a page of visits starts: after this date and id, in (date, id) order.
pub type VisitCursor = Cursor<NaiveDate>;

/// One list a role reads, each served by its own index: the member's (`visits_member_date_idx`),
/// the pal's (`visits_pal_idx`) and the open one (`visits_open_idx`). No role means all three,
/// which never overlap (a request has no pal, and the open list is other members' requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shelf {
    Member,
    Pal,
    Open,
}

impl Shelf {
    fn of(role: Option<VisitRole>) -> &'static [Shelf] {
        match role {
            Some(VisitRole::Member) => &[Shelf::Member],
            Some(VisitRole::Pal) => &[Shelf::Pal],
            Some(VisitRole::Open) => &[Shelf::Open],
            None => &[Shelf::Member, Shelf::Pal, Shelf::Open],
        }
    }

    fn rows(
        self,
        viewer: UserId,
        status: Option<VisitStatus>,
        deadlines: &Deadlines,
    ) -> Select<visit::Entity> {
        let own = match self {
            Shelf::Open => {
                return open_requests(status, deadlines).filter(visit::Column::MemberId.ne(viewer));
            }
            Shelf::Member => visit::Column::MemberId.eq(viewer),
            Shelf::Pal => visit::Column::PalId.eq(viewer),
        };
        let query = visit::Entity::find().filter(own);
        match status {
            Some(status) => query.filter(has_status(status, deadlines)),
            None => query,
        }
    }
}

/// Visits whose status today (stored, or as [`Deadlines`] reads it) is `status`.
fn has_status(status: VisitStatus, deadlines: &Deadlines) -> Condition {
    let stored = visit::Column::Status;
    let on_time = visit::Column::Date.gte(deadlines.expired_before);
    match status {
        VisitStatus::Requested | VisitStatus::Accepted => {
            Condition::all().add(stored.eq(status)).add(on_time)
        }
        VisitStatus::Expired => Condition::any().add(stored.eq(status)).add(
            Condition::all()
                .add(stored.is_in(VisitStatus::OUTSTANDING))
                .add(visit::Column::Date.lt(deadlines.expired_before)),
        ),
        VisitStatus::Completed | VisitStatus::Cancelled => Condition::all().add(stored.eq(status)),
    }
}

const BY_DATE: Keyset<visit::Column, visit::Column> = Keyset {
    sort: visit::Column::Date,
    id: visit::Column::Id,
    order: Order::Asc,
};

/// A page of the visits `viewer` can see through `filter`, soonest first (then by id).
pub async fn visible_visits(
    conn: &impl ConnectionTrait,
    viewer: UserId,
    filter: VisitFilter,
    deadlines: &Deadlines,
    first: u64,
    after: Option<VisitCursor>,
) -> Result<Page<visit::Model>, AppError> {
    let mut items = Vec::new();
    // Each shelf's own page, then the first of them all: every read is an index range from the
    // cursor, however many visits the other shelves hold.
    for shelf in Shelf::of(filter.role) {
        let rows = shelf.rows(viewer, filter.status, deadlines);
        items.extend(BY_DATE.rows(conn, rows, first + 1, after).await?);
    }
    items.sort_unstable_by_key(|visit| (visit.date, visit.id));
    let mut page = Page::from_one_extra(items, first);
    page.items = page
        .items
        .into_iter()
        .map(|visit| deadlines.settle(visit))
        .collect();
    Ok(page)
}

/// How many visits the same filter matches across all pages.
pub async fn count_visible_visits(
    conn: &impl ConnectionTrait,
    viewer: UserId,
    filter: VisitFilter,
    deadlines: &Deadlines,
) -> Result<u64, AppError> {
    let mut total = 0;
    for shelf in Shelf::of(filter.role) {
        total += match shelf {
            // Every open request less the viewer's own: the first reads the open index with no
            // per-row test (the bulk of the work, 1M visits: 9 ms where filtering took 11), the
            // second a few entries of the member's.
            Shelf::Open => {
                let all_open = open_requests(filter.status, deadlines).count(conn).await?;
                let own = open_requests(filter.status, deadlines)
                    .filter(visit::Column::MemberId.eq(viewer))
                    .count(conn)
                    .await?;
                all_open.saturating_sub(own)
            }
            _ => {
                shelf
                    .rows(viewer, filter.status, deadlines)
                    .count(conn)
                    .await?
            }
        };
    }
    Ok(total)
}

/// Everyone's open requests (the open list before leaving out the viewer's own).
fn open_requests(status: Option<VisitStatus>, deadlines: &Deadlines) -> Select<visit::Entity> {
    let open = Condition::all()
        .add(visit::Column::Status.eq(VisitStatus::Requested))
        .add(visit::Column::Date.gte(deadlines.today));
    let condition = match status {
        Some(status) => open.add(has_status(status, deadlines)),
        None => open,
    };
    visit::Entity::find().filter(condition)
}
