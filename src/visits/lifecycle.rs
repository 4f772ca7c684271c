//! A visit's life after its request: accepted by a pal, completed (and paid through the ledger),
//! cancelled by its member. Every transition locks the visit row first and is decided by
//! [`check_transition`] under that lock.
use chrono::Utc;
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, Statement,
    sea_query::Expr,
};

use super::{
    Deadlines,
    entities::{VisitStatus, visit},
    queries::is_visible_to,
};
use crate::{
    domain::{UserId, VisitId},
    error::AppError,
    events::{
        self, NewEvent, OutboxInsert,
        catalogue::{VisitAccepted, VisitCancelled, VisitCompleted, VisitReleased},
    },
    ledger::{self, Transfer, entities::transaction},
    locking::for_update,
};

/// What a caller asks of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Complete,
    Cancel,
}

/// What the visit's state allows.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Make the change.
    Proceed,
    /// Already done by this caller: answer with the visit as it is (a retried accept).
    AlreadyDone,
}

/// The transition rules in one place: who may do what to a visit in each status (as it stands
/// today: settled by [`Deadlines`]).
fn check_transition(
    visit: &visit::Model,
    caller: UserId,
    action: Action,
    deadlines: &Deadlines,
) -> Result<Verdict, AppError> {
    use {Action::*, VisitStatus::*};
    let is_member = visit.member_id == caller;
    let is_its_pal = visit.pal_id == Some(caller);
    match (action, visit.status) {
        (Accept, _) if is_member => Err(AppError::Forbidden("you cannot accept your own visit")),
        (Complete, _) if is_member => {
            Err(AppError::Forbidden("you cannot complete your own visit"))
        }
        (Cancel, _) if !is_member => Err(if is_visible_to(visit, caller) {
            AppError::Forbidden("only the visit's member can cancel it")
        } else {
            AppError::NotFound("visit")
        }),
        // Pals cannot claim the past; one who did the visit can still complete it in the grace days.
        (Accept, Requested) if visit.date < deadlines.today => Err(AppError::Conflict(
            "this visit's date has passed: it can no longer be accepted",
        )),
        (Accept | Complete | Cancel, Requested) => Ok(Verdict::Proceed),
        (Accept, Accepted) if is_its_pal => Ok(Verdict::AlreadyDone),
        (Accept, Accepted) => Err(AppError::Conflict(
            "another pal has already accepted this visit",
        )),
        (Complete, Accepted) if is_its_pal => Ok(Verdict::Proceed),
        (Complete, Accepted) => Err(AppError::Forbidden("another pal accepted this visit")),
        (Cancel, Accepted) => Ok(Verdict::Proceed),
        (_, Completed) => Err(AppError::Conflict("this visit is already completed")),
        (Cancel, Cancelled) => Err(AppError::Conflict("this visit is already cancelled")),
        (Accept | Complete, Cancelled) => Err(AppError::Conflict("this visit was cancelled")),
        (_, Expired) => Err(AppError::Conflict(
            "this visit has expired: its date and grace days have passed",
        )),
    }
}

/// A pal claims a requested visit; from then on only they may complete it.
pub async fn accept_visit(
    conn: &impl ConnectionTrait,
    pal_id: UserId,
    visit_id: VisitId,
    deadlines: &Deadlines,
) -> Result<visit::Model, AppError> {
    // Held until commit: of two pals claiming this visit, the second sees it taken.
    let visit = lock_visit(conn, visit_id, deadlines).await?;
    if check_transition(&visit, pal_id, Action::Accept, deadlines)? == Verdict::AlreadyDone {
        return Ok(visit);
    }
    change_status(
        conn,
        &visit,
        VisitStatus::Accepted,
        Some(pal_id),
        None,
        |accepted| {
            Ok(vec![NewEvent::of(&VisitAccepted {
                visit: accepted.state(),
            })?])
        },
    )
    .await
}

/// The pal completes the visit: the member pays its minutes, the pal is credited them less the fee.
pub async fn complete_visit(
    conn: &impl ConnectionTrait,
    pal_id: UserId,
    visit_id: VisitId,
    overhead_percent: i32,
    deadlines: &Deadlines,
) -> Result<transaction::Model, AppError> {
    // Held until commit: completions, acceptances, cancellations and the sweeper's expiry of one
    // visit queue here, so it is paid at most once and never after a cancellation or expiry.
    let visit = lock_visit(conn, visit_id, deadlines).await?;
    check_transition(&visit, pal_id, Action::Complete, deadlines)?;
    // Then both balances, in user-id order (one statement), after the visit: the fixed lock order.
    let balances = ledger::lock_balances(conn, &[visit.member_id, pal_id]).await?;
    let member_balance = balances.get(&visit.member_id).copied().unwrap_or_default();
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
    // The payment, the visit's change and both events are one statement.
    let payment = ledger::TransferStatement::new(transfer, overhead_percent);
    let transaction = &payment.transaction;
    change_status(
        conn,
        &visit,
        VisitStatus::Completed,
        Some(pal_id),
        Some(&payment),
        |completed| {
            Ok(vec![
                NewEvent::of(&VisitCompleted {
                    visit: completed.state(),
                    previous_status: visit.status.to_value(),
                    transaction_id: transaction.id,
                    pal_credit: transaction.pal_credit,
                    fee: transaction.fee,
                })?,
                NewEvent::of(&ledger::transfer_recorded(transaction))?,
            ])
        },
    )
    .await?;
    Ok(payment.transaction)
}

/// The member withdraws a visit that is not yet completed, freeing its minutes.
pub async fn cancel_visit(
    conn: &impl ConnectionTrait,
    member_id: UserId,
    visit_id: VisitId,
    deadlines: &Deadlines,
) -> Result<visit::Model, AppError> {
    // Held until commit: a cancellation and a completion of one visit cannot both succeed.
    let visit = lock_visit(conn, visit_id, deadlines).await?;
    check_transition(&visit, member_id, Action::Cancel, deadlines)?;
    change_status(
        conn,
        &visit,
        VisitStatus::Cancelled,
        visit.pal_id,
        None,
        |cancelled| {
            Ok(vec![NewEvent::of(&VisitCancelled {
                visit: cancelled.state(),
                previous_status: visit.status.to_value(),
            })?])
        },
    )
    .await
}

/// For a departing user: their outstanding visits are cancelled and the visits they had accepted as
/// a pal are open again for others. Expired ones are left to the sweeper: time, not the user,
/// ended them.
pub async fn withdraw_user(
    conn: &impl ConnectionTrait,
    user_id: UserId,
    deadlines: &Deadlines,
) -> Result<(), AppError> {
    // Locked (visits only, no balances: the lock order holds) so each event can say what the
    // visit was before.
    let touched = for_update(
        visit::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(
                        sea_orm::Condition::all()
                            .add(visit::Column::MemberId.eq(user_id))
                            .add(visit::Column::Status.is_in(VisitStatus::OUTSTANDING)),
                    )
                    .add(
                        sea_orm::Condition::all()
                            .add(visit::Column::PalId.eq(user_id))
                            .add(visit::Column::Status.eq(VisitStatus::Accepted)),
                    ),
            )
            .filter(visit::Column::Date.gte(deadlines.expired_before)),
    )
    .all(conn)
    .await?;
    let mut recorded = Vec::with_capacity(touched.len());
    for before in touched {
        let event = if before.member_id == user_id {
            let cancelled =
                set_status(conn, before.id, VisitStatus::Cancelled, before.pal_id).await?;
            NewEvent::of(&VisitCancelled {
                visit: cancelled.state(),
                previous_status: before.status.to_value(),
            })?
        } else {
            let reopened = set_status(conn, before.id, VisitStatus::Requested, None).await?;
            NewEvent::of(&VisitReleased {
                visit: reopened.state(),
                previous_pal_id: user_id,
            })?
        };
        recorded.push(event);
    }
    events::record_all(conn, recorded).await
}

/// The visit, locked, as it stands today: the deadline is checked under the lock, so a transition
/// and the sweeper agree on whether time ran out.
async fn lock_visit(
    conn: &impl ConnectionTrait,
    visit_id: VisitId,
    deadlines: &Deadlines,
) -> Result<visit::Model, AppError> {
    for_update(visit::Entity::find_by_id(visit_id))
        .one(conn)
        .await?
        .map(|visit| deadlines.settle(visit))
        .ok_or(AppError::NotFound("visit"))
}

/// Moves the locked `visit` to `status` and `pal_id`, with the `payment` for it if there is one,
/// and records the events `events_of` makes of its new state, in one statement: one round trip
/// where it was two or three. The new state is known before the statement (the caller holds the
/// row lock), so the events go in with the change.
async fn change_status(
    conn: &impl ConnectionTrait,
    visit: &visit::Model,
    status: VisitStatus,
    pal_id: Option<UserId>,
    payment: Option<&ledger::TransferStatement>,
    events_of: impl FnOnce(&visit::Model) -> Result<Vec<NewEvent>, AppError>,
) -> Result<visit::Model, AppError> {
    let after = visit::Model {
        status,
        pal_id,
        updated_at: Utc::now(),
        ..visit.clone()
    };
    let mut values: Vec<sea_orm::Value> = vec![
        status.to_value().into(),
        pal_id.into(),
        after.updated_at.into(),
        visit.id.into(),
    ];
    let paid = payment.map_or_else(String::new, |payment| {
        let ctes = format!("{}, ", payment.ctes(values.len() + 1));
        values.extend(payment.values.iter().cloned());
        ctes
    });
    let insert = OutboxInsert::new(events_of(&after)?, values.len() + 1);
    values.extend(insert.values.iter().cloned());
    let sql = format!(
        "WITH {paid}changed AS (UPDATE visits SET status = $1, pal_id = $2, updated_at = $3 \
         WHERE id = $4 RETURNING *), recorded AS ({}) SELECT changed.* FROM changed",
        insert.sql(None)
    );
    let statement = Statement::from_sql_and_values(conn.get_database_backend(), sql, values);
    match visit::Model::find_by_statement(statement).one(conn).await {
        Ok(Some(changed)) => Ok(changed),
        Ok(None) => Err(AppError::NotFound("visit")),
        Err(error) => match payment.and_then(|payment| payment.refusal(&error)) {
            Some(refusal) => Err(refusal),
            None => Err(insert.failed(error)),
        },
    }
}

async fn set_status(
    conn: &impl ConnectionTrait,
    visit_id: VisitId,
    status: VisitStatus,
    pal_id: Option<UserId>,
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
