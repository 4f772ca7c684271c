//! Requesting a visit: the member's budget is checked and the visit booked under their balance lock.
use chrono::{NaiveDate, Utc};
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, Statement,
    Value, sea_query::ArrayType,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::{
    Deadlines,
    entities::{VisitStatus, visit},
};
use crate::{
    domain::{Minutes, UserId, VisitId},
    error::{AppError, Contention, violated_constraint},
    events::{
        NewEvent, OutboxInsert,
        catalogue::{VisitRequested, VisitState},
    },
    ledger,
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
    member_id: UserId,
    request: &VisitRequest,
    deadlines: &Deadlines,
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
                Ok(deadlines.settle(earlier))
            } else {
                Err(AppError::Conflict(
                    "this idempotencyKey was already used for a different request",
                ))
            };
        }
    }

    // A fresh statement under the lock sees every booking committed before we got it.
    let booking =
        book_if_affordable(conn, member_id, balance, request, fingerprint, deadlines).await?;
    booking.visit.ok_or(AppError::InsufficientMinutes {
        requested: booking.requested,
        available: (balance - booking.outstanding).max(Minutes(0)),
    })
}

/// What [`book_if_affordable`] found and did.
struct Booking {
    requested: Minutes,
    outstanding: Minutes,
    visit: Option<visit::Model>,
}

/// Sums the member's outstanding minutes and, if `balance` covers them plus this request, inserts
/// the visit, its tasks and its `visit.requested` event: one round trip where it was four, and the
/// member's balance lock is held for that much less. The caller holds that lock, and this statement starts after it was
/// granted, so its snapshot sees every booking committed before.
async fn book_if_affordable(
    conn: &impl ConnectionTrait,
    member_id: UserId,
    balance: Minutes,
    request: &VisitRequest,
    fingerprint: Option<Vec<u8>>,
    deadlines: &Deadlines,
) -> Result<Booking, AppError> {
    const BOOK: &str = r#"
WITH outstanding AS (
    SELECT COALESCE(SUM(minutes), 0)::int4 AS minutes
    FROM visits WHERE member_id = $1 AND status = ANY($10) AND date >= $12
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
)"#;
    let visit_id = VisitId(Uuid::new_v4());
    // Everything the event says is known before the insert: it goes in with the visit, or not at all.
    let requested = VisitRequested {
        visit: VisitState {
            visit_id,
            member_id,
            pal_id: None,
            date: request.date,
            minutes: Minutes(request.minutes),
            status: VisitStatus::Requested.to_value(),
        },
        task_count: request.tasks.len(),
    };
    let event = OutboxInsert::new(vec![NewEvent::of(&requested)?], 13);
    let sql = format!(
        "{BOOK}, recorded AS ({}) SELECT outstanding.minutes AS outstanding, booked.* \
         FROM outstanding LEFT JOIN booked ON true",
        event.sql(Some("EXISTS (SELECT 1 FROM booked)"))
    );
    let (names, descriptions): (Vec<Value>, Vec<Value>) = request
        .tasks
        .iter()
        // sea-query cannot bind a NULL inside an array; an empty description is no description
        // anyway (`VisitRequest::new` already turns blank ones into `None`).
        .map(|task| {
            let description = task.description.clone().unwrap_or_default();
            (Value::from(task.name.as_str()), Value::from(description))
        })
        .unzip();
    let text_array = |values| crate::db::array(ArrayType::String, values);
    let statement = Statement::from_sql_and_values(
        conn.get_database_backend(),
        sql,
        [
            member_id.into(),
            visit_id.into(),
            request.date.into(),
            request.minutes.into(),
            request.idempotency_key.clone().into(),
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
            // Expired visits hold no minutes, whether or not the sweeper has marked them yet.
            deadlines.expired_before.into(),
        ]
        .into_iter()
        .chain(event.values.iter().cloned()),
    );
    let row = match conn.query_one_raw(statement).await {
        Ok(row) => row,
        Err(error) => {
            // Only reachable if the balance lock was bypassed; a retry finds the committed visit.
            let raced =
                violated_constraint(&error).as_deref() == Some("visits_member_idempotency_key");
            let failure = event.failed(error);
            return Err(if raced {
                AppError::Contention(Contention::SerializationFailure)
            } else {
                failure
            });
        }
    }
    .ok_or_else(|| AppError::internal(anyhow::anyhow!("the booking statement returned no row")))?;
    let outstanding: Minutes = row.try_get("", "outstanding")?;
    let booked: Option<Uuid> = row.try_get("", "id")?;
    let visit = match booked {
        Some(_) => Some(visit::Model::from_query_result(&row, "")?),
        None => None,
    };
    Ok(Booking {
        requested: Minutes(request.minutes),
        outstanding,
        visit,
    })
}
