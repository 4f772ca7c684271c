use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use sea_orm::{
    ActiveEnum, ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{ArrayType, Expr},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::entities::{VisitStatus, task, visit};
use crate::{
    error::{AppError, violated_constraint},
    ledger::{self, Transfer, entities::transaction},
    locking::for_update,
    paging::Page,
};

/// A member's request, normalised by [`VisitRequest::new`] and checked by `validate`.
#[derive(Debug, Validate)]
pub struct VisitRequest {
    #[validate(custom(function = "today_or_later", message = "must be today or later (UTC)"))]
    pub date: NaiveDate,
    #[validate(range(min = 1, max = 480, message = "must be 1 to 480"))]
    pub minutes: i32,
    #[validate(length(min = 1, max = 20, message = "must list 1 to 20 tasks"), nested)]
    pub tasks: Vec<TaskRequest>,
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Validate, Serialize)]
pub struct TaskRequest {
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub name: String,
    #[validate(length(max = 1000, message = "must be at most 1000 characters"))]
    pub description: Option<String>,
}

impl VisitRequest {
    pub fn new(
        date: NaiveDate,
        minutes: i32,
        tasks: Vec<(String, Option<String>)>,
        idempotency_key: Option<String>,
    ) -> Self {
        Self {
            date,
            minutes,
            tasks: tasks
                .into_iter()
                .map(|(name, description)| TaskRequest {
                    name: name.trim().to_string(),
                    description: description
                        .map(|text| text.trim().to_string())
                        .filter(|text| !text.is_empty()),
                })
                .collect(),
            idempotency_key: idempotency_key.map(|key| key.trim().to_string()),
        }
    }

    /// What makes two requests "the same" for an idempotent retry.
    fn fingerprint(&self) -> Vec<u8> {
        let canonical =
            serde_json::json!([self.date.to_string(), self.minutes, self.tasks]).to_string();
        Sha256::digest(canonical.as_bytes()).to_vec()
    }
}

fn today_or_later(date: &NaiveDate) -> Result<(), ValidationError> {
    if *date >= Utc::now().date_naive() {
        Ok(())
    } else {
        Err(ValidationError::new("past_date"))
    }
}

/// Books a visit if the member can afford it on top of what they already have outstanding.
pub async fn request_visit(
    conn: &impl ConnectionTrait,
    member_id: Uuid,
    request: VisitRequest,
) -> Result<visit::Model, AppError> {
    request.validate()?;
    // Only a keyed request can be retried, so only it needs a fingerprint to compare retries by.
    let fingerprint = request
        .idempotency_key
        .is_some()
        .then(|| request.fingerprint());
    let balances = ledger::lock_balances(conn, &[member_id]).await?;
    let balance = *balances.get(&member_id).ok_or_else(|| {
        AppError::internal(anyhow::anyhow!("member {member_id} has no balance row"))
    })?;

    // Under the member's balance lock, so a concurrent retry with the same key has either committed
    // (and is found here) or is queued behind us.
    if let Some(key) = &request.idempotency_key {
        let earlier = visit::Entity::find()
            .filter(visit::Column::MemberId.eq(member_id))
            .filter(visit::Column::IdempotencyKey.eq(key.as_str()))
            .one(conn)
            .await?;
        if let Some(earlier) = earlier {
            return if earlier.idempotency_fingerprint == fingerprint {
                Ok(earlier)
            } else {
                Err(AppError::Conflict(
                    "this idempotencyKey was already used for a different request",
                ))
            };
        }
    }

    // A fresh statement under the lock sees every booking committed before we got it.
    let booking = book_if_affordable(conn, member_id, balance, request, fingerprint).await?;
    booking.visit.ok_or(AppError::InsufficientMinutes {
        requested: booking.requested,
        available: (balance - booking.outstanding).max(0),
    })
}

/// What [`book_if_affordable`] found and did.
struct Booking {
    requested: i32,
    outstanding: i32,
    visit: Option<visit::Model>,
}

/// Sums the member's outstanding minutes and, if `balance` covers them plus this request, inserts
/// the visit and its tasks: one round trip where it was three, and the member's balance lock is
/// held for that much less. The caller holds that lock, and this statement starts after it was
/// granted, so its snapshot sees every booking committed before.
async fn book_if_affordable(
    conn: &impl ConnectionTrait,
    member_id: Uuid,
    balance: i32,
    request: VisitRequest,
    fingerprint: Option<Vec<u8>>,
) -> Result<Booking, AppError> {
    const BOOK: &str = r#"
WITH outstanding AS (
    SELECT COALESCE(SUM(minutes), 0)::int4 AS minutes
    FROM visits WHERE member_id = $1 AND status = ANY($10)
), booked AS (
    INSERT INTO visits (id, member_id, date, minutes, status, idempotency_key,
                        idempotency_fingerprint, created_at, updated_at)
    SELECT $2, $1, $3, $4, $11, $5, $6, now(), now()
    FROM outstanding WHERE $7 - outstanding.minutes >= $4
    RETURNING *
), listed AS (
    INSERT INTO visit_tasks (visit_id, position, name, description)
    SELECT booked.id, (task.ordinality - 1)::int2, task.name, NULLIF(task.description, '')
    FROM booked, unnest($8::text[], $9::text[]) WITH ORDINALITY AS task(name, description, ordinality)
)
SELECT outstanding.minutes AS outstanding, booked.*
FROM outstanding LEFT JOIN booked ON true"#;
    let (names, descriptions): (Vec<Value>, Vec<Value>) = request
        .tasks
        .into_iter()
        // sea-query cannot bind a NULL inside an array; an empty description is no description
        // anyway (`VisitRequest::new` already turns blank ones into `None`).
        .map(|task| {
            let description = task.description.unwrap_or_default();
            (Value::from(task.name), Value::from(description))
        })
        .unzip();
    let text_array = |values| Value::Array(ArrayType::String, Some(Box::new(values)));
    let statement = Statement::from_sql_and_values(
        conn.get_database_backend(),
        BOOK,
        [
            member_id.into(),
            Uuid::new_v4().into(),
            request.date.into(),
            request.minutes.into(),
            request.idempotency_key.into(),
            fingerprint.into(),
            balance.into(),
            text_array(names),
            text_array(descriptions),
            text_array(
                VisitStatus::OUTSTANDING
                    .iter()
                    .map(|status| status.to_value().into())
                    .collect(),
            ),
            VisitStatus::Requested.to_value().into(),
        ],
    );
    let row = conn
        .query_one_raw(statement)
        .await
        .map_err(|error| match violated_constraint(&error).as_deref() {
            // Only reachable if the balance lock was bypassed; a retry finds the committed visit.
            Some("visits_member_idempotency_key") => AppError::Contention,
            _ => error.into(),
        })?
        .ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("the booking statement returned no row"))
        })?;
    let outstanding: i32 = row.try_get("", "outstanding")?;
    let booked: Option<Uuid> = row.try_get("", "id")?;
    let visit = match booked {
        Some(_) => Some(visit::Model::from_query_result(&row, "")?),
        None => None,
    };
    Ok(Booking {
        requested: request.minutes,
        outstanding,
        visit,
    })
}

/// A pal claims a requested visit; from then on only they may complete it.
pub async fn accept_visit(
    conn: &impl ConnectionTrait,
    pal_id: Uuid,
    visit_id: Uuid,
) -> Result<visit::Model, AppError> {
    // Held until commit: of two pals claiming this visit, the second sees it taken.
    let visit = lock_visit(conn, visit_id).await?;
    if visit.member_id == pal_id {
        return Err(AppError::Forbidden("you cannot accept your own visit"));
    }
    match visit.status {
        VisitStatus::Requested => {}
        // A retried accept by the same pal is answered, not refused.
        VisitStatus::Accepted if visit.pal_id == Some(pal_id) => return Ok(visit),
        VisitStatus::Accepted => {
            return Err(AppError::Conflict(
                "another pal has already accepted this visit",
            ));
        }
        VisitStatus::Completed => {
            return Err(AppError::Conflict("this visit is already completed"));
        }
        VisitStatus::Cancelled => return Err(AppError::Conflict("this visit was cancelled")),
    }
    set_status(conn, visit_id, VisitStatus::Accepted, Some(pal_id)).await
}

/// The pal completes the visit: the member pays its minutes, the pal is credited them less the fee.
pub async fn complete_visit(
    conn: &impl ConnectionTrait,
    pal_id: Uuid,
    visit_id: Uuid,
    overhead_percent: i32,
) -> Result<transaction::Model, AppError> {
    // Held until commit: completions, acceptances and cancellations of one visit queue here, so it
    // is paid at most once and never after a cancellation.
    let visit = lock_visit(conn, visit_id).await?;
    if visit.member_id == pal_id {
        return Err(AppError::Forbidden("you cannot complete your own visit"));
    }
    match visit.status {
        VisitStatus::Requested => {}
        VisitStatus::Accepted if visit.pal_id == Some(pal_id) => {}
        VisitStatus::Accepted => {
            return Err(AppError::Forbidden("another pal accepted this visit"));
        }
        VisitStatus::Completed => {
            return Err(AppError::Conflict("this visit is already completed"));
        }
        VisitStatus::Cancelled => return Err(AppError::Conflict("this visit was cancelled")),
    }
    // Then both balances, in user-id order (one statement), after the visit: the fixed lock order.
    let balances = ledger::lock_balances(conn, &[visit.member_id, pal_id]).await?;
    let member_balance = balances.get(&visit.member_id).copied().unwrap_or(0);
    if member_balance < visit.minutes {
        return Err(AppError::InsufficientMinutes {
            requested: visit.minutes,
            available: member_balance,
        });
    }
    let transfer = Transfer {
        visit_id,
        member_id: visit.member_id,
        pal_id,
        minutes: visit.minutes,
    };
    let transaction = ledger::record_transfer(conn, transfer, overhead_percent).await?;
    set_status(conn, visit_id, VisitStatus::Completed, Some(pal_id)).await?;
    Ok(transaction)
}

/// The member withdraws a visit that is not yet completed, freeing its minutes.
pub async fn cancel_visit(
    conn: &impl ConnectionTrait,
    member_id: Uuid,
    visit_id: Uuid,
) -> Result<visit::Model, AppError> {
    // Held until commit: a cancellation and a completion of one visit cannot both succeed.
    let visit = lock_visit(conn, visit_id).await?;
    if visit.member_id != member_id {
        return Err(if is_visible_to(&visit, member_id) {
            AppError::Forbidden("only the visit's member can cancel it")
        } else {
            AppError::NotFound("visit")
        });
    }
    match visit.status {
        VisitStatus::Requested | VisitStatus::Accepted => {}
        VisitStatus::Completed => {
            return Err(AppError::Conflict("this visit is already completed"));
        }
        VisitStatus::Cancelled => {
            return Err(AppError::Conflict("this visit is already cancelled"));
        }
    }
    set_status(conn, visit_id, VisitStatus::Cancelled, visit.pal_id).await
}

/// For a departing user: their outstanding visits are cancelled and the visits they had accepted as
/// a pal are open again for others.
pub async fn withdraw_user(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<(), AppError> {
    let now = Utc::now();
    visit::Entity::update_many()
        .col_expr(visit::Column::Status, Expr::value(VisitStatus::Cancelled))
        .col_expr(visit::Column::UpdatedAt, Expr::value(now))
        .filter(visit::Column::MemberId.eq(user_id))
        .filter(visit::Column::Status.is_in(VisitStatus::OUTSTANDING))
        .exec(conn)
        .await?;
    visit::Entity::update_many()
        .col_expr(visit::Column::Status, Expr::value(VisitStatus::Requested))
        .col_expr(visit::Column::PalId, Expr::value(Option::<Uuid>::None))
        .col_expr(visit::Column::UpdatedAt, Expr::value(now))
        .filter(visit::Column::PalId.eq(user_id))
        .filter(visit::Column::Status.eq(VisitStatus::Accepted))
        .exec(conn)
        .await?;
    Ok(())
}

async fn lock_visit(conn: &impl ConnectionTrait, visit_id: Uuid) -> Result<visit::Model, AppError> {
    for_update(visit::Entity::find_by_id(visit_id))
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("visit"))
}

async fn set_status(
    conn: &impl ConnectionTrait,
    visit_id: Uuid,
    status: VisitStatus,
    pal_id: Option<Uuid>,
) -> Result<visit::Model, AppError> {
    let mut updated = visit::Entity::update_many()
        .col_expr(visit::Column::Status, Expr::value(status))
        .col_expr(visit::Column::PalId, Expr::value(pal_id))
        .col_expr(visit::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(visit::Column::Id.eq(visit_id))
        .exec_with_returning(conn)
        .await?;
    updated.pop().ok_or(AppError::NotFound("visit"))
}

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
    visit.member_id == viewer
        || visit.pal_id == Some(viewer)
        || visit.status == VisitStatus::Requested
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

/// Keyset position: the last visit of the previous page in (date, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitCursor {
    pub date: NaiveDate,
    pub id: Uuid,
}

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
    let total_count = visit::Entity::find()
        .filter(condition.clone())
        .count(conn)
        .await?;
    let mut query = visit::Entity::find().filter(condition);
    if let Some(cursor) = after {
        query = query.filter(
            Condition::any()
                .add(visit::Column::Date.gt(cursor.date))
                .add(
                    Condition::all()
                        .add(visit::Column::Date.eq(cursor.date))
                        .add(visit::Column::Id.gt(cursor.id)),
                ),
        );
    }
    let items = query
        .order_by_asc(visit::Column::Date)
        .order_by_asc(visit::Column::Id)
        .limit(first + 1)
        .all(conn)
        .await?;
    Ok(Page::from_one_extra(items, first, total_count))
}
