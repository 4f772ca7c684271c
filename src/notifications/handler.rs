//! Turning events into notifications. Each payload is read through a struct of only the fields
//! this consumer needs (a weak schema: anything else in the payload is ignored).
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbErr, Statement, Value, sea_query::ArrayType,
};
use serde::Deserialize;
use uuid::Uuid;

use super::service::Kind;
use crate::{
    db::array,
    error::AppError,
    events::{
        self, NewEvent, StoredEvent,
        catalogue::NotificationAdded,
        consumer::{Handler, HandlerError},
    },
};

pub struct NotificationsHandler;

/// What this consumer reads of a visit event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VisitFacts {
    visit_id: Uuid,
    member_id: Uuid,
    pal_id: Option<Uuid>,
    minutes: i32,
}

/// What this consumer reads of `ledger.transfer_recorded`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferFacts {
    visit_id: Uuid,
    member_id: Uuid,
    pal_id: Uuid,
    pal_credit: i32,
}

impl Handler for NotificationsHandler {
    const NAME: &'static str = "notifications";
    /// Each event makes its own notification, whatever came before: none is stale.
    const ORDERED: bool = false;

    const WANTED: &'static [&'static str] = &[
        "visit.accepted",
        "visit.completed",
        "visit.cancelled",
        "visit.expired",
        "ledger.transfer_recorded",
    ];

    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        let notices: Vec<(Notice, &StoredEvent)> = notice_of(event)?
            .map(|notice| (notice, event))
            .into_iter()
            .collect();
        insert_and_announce(txn, notices).await
    }

    /// One statement for the batch's notifications and one for their announcements, instead of
    /// two per event: under a completion burst this consumer inserts thousands a second.
    async fn handle_many(
        &self,
        txn: &DatabaseTransaction,
        events: &[&StoredEvent],
    ) -> Result<(), HandlerError> {
        let mut notices = Vec::with_capacity(events.len());
        for event in events {
            if let Some(notice) = notice_of(event)? {
                notices.push((notice, *event));
            }
        }
        insert_and_announce(txn, notices).await
    }
}

/// The notification an event makes, if any.
fn notice_of(event: &StoredEvent) -> Result<Option<Notice>, HandlerError> {
    if event.version != 1 {
        return Err(HandlerError::Poison(format!(
            "{} version {} is not one this consumer knows",
            event.event_type, event.version
        )));
    }
    let notice = match event.event_type.as_str() {
        "visit.accepted" | "visit.completed" => {
            let visit: VisitFacts = facts(event)?;
            let kind = if event.event_type == "visit.accepted" {
                Kind::VisitAccepted
            } else {
                // The member is shown the minutes debited; the pal's credit is not their business.
                Kind::VisitCompleted
            };
            Some(Notice {
                recipient: visit.member_id,
                kind,
                visit: visit.visit_id,
                actor: visit.pal_id,
                minutes: visit.minutes,
            })
        }
        "visit.cancelled" => {
            let visit: VisitFacts = facts(event)?;
            // Only a pal who had accepted it has anything to learn.
            visit.pal_id.map(|pal| Notice {
                recipient: pal,
                kind: Kind::VisitCancelled,
                visit: visit.visit_id,
                actor: Some(visit.member_id),
                minutes: visit.minutes,
            })
        }
        "visit.expired" => {
            let visit: VisitFacts = facts(event)?;
            Some(Notice {
                recipient: visit.member_id,
                kind: Kind::VisitExpired,
                visit: visit.visit_id,
                actor: None,
                minutes: visit.minutes,
            })
        }
        "ledger.transfer_recorded" => {
            let transfer: TransferFacts = facts(event)?;
            Some(Notice {
                recipient: transfer.pal_id,
                kind: Kind::MinutesEarned,
                visit: transfer.visit_id,
                actor: Some(transfer.member_id),
                minutes: transfer.pal_credit,
            })
        }
        _ => None,
    };
    Ok(notice)
}

fn facts<'event, T: Deserialize<'event>>(event: &'event StoredEvent) -> Result<T, HandlerError> {
    // Read from the payload where it lies (a copy of it would be a tree of allocations per event).
    T::deserialize(&event.payload).map_err(|error| {
        HandlerError::Poison(format!("{} payload unreadable: {error}", event.event_type))
    })
}

struct Notice {
    recipient: Uuid,
    kind: Kind,
    visit: Uuid,
    actor: Option<Uuid>,
    minutes: i32,
}

/// Inserts the notifications and, for those that are new (a redelivered event inserts nothing),
/// records `notification.added`: the event says a notification was added, once.
async fn insert_and_announce(
    txn: &DatabaseTransaction,
    notices: Vec<(Notice, &StoredEvent)>,
) -> Result<(), HandlerError> {
    if notices.is_empty() {
        return Ok(());
    }
    // Arrays, one per column: one statement text whatever the batch's size, so it is planned
    // once per connection (a `VALUES` list of each new length is a new statement).
    let mut columns: [Vec<Value>; 8] = std::array::from_fn(|_| Vec::with_capacity(notices.len()));
    for (notice, event) in notices {
        let row = [
            Uuid::now_v7().to_string().into(),
            notice.recipient.to_string().into(),
            notice.kind.as_str().into(),
            notice.visit.to_string().into(),
            // sea-query binds a text array only without NULL elements: '' stands for none.
            notice
                .actor
                .map_or_else(String::new, |actor| actor.to_string())
                .into(),
            notice.minutes.into(),
            event.id.to_string().into(),
            event.occurred_at.to_rfc3339().into(),
        ];
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    // Each column's element type, as the statement's `unnest` casts them.
    let bound = columns
        .into_iter()
        .zip([
            ArrayType::String,
            ArrayType::String,
            ArrayType::String,
            ArrayType::String,
            ArrayType::String,
            ArrayType::Int,
            ArrayType::String,
            ArrayType::String,
        ])
        .map(|(items, ty)| array(ty, items));
    let added = txn
        .query_all_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO notifications (id, recipient_id, kind, visit_id, actor_id, minutes, event_id, occurred_at) \
             SELECT n.id::uuid, n.recipient_id::uuid, n.kind, n.visit_id::uuid, NULLIF(n.actor_id, '')::uuid, n.minutes, \
             n.event_id::uuid, n.occurred_at::timestamptz \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::text[], $8::text[]) \
             AS n(id, recipient_id, kind, visit_id, actor_id, minutes, event_id, occurred_at) \
             ON CONFLICT (event_id, recipient_id) DO NOTHING RETURNING id, recipient_id, kind",
            bound,
        ))
        .await?;
    let mut announcements = Vec::with_capacity(added.len());
    for row in &added {
        let announcement = NotificationAdded {
            notification_id: row.try_get("", "id")?,
            recipient_id: row.try_get("", "recipient_id")?,
            kind: row.try_get("", "kind")?,
        };
        announcements.push(
            NewEvent::of(&announcement).map_err(|error| HandlerError::Failed(error.to_string()))?,
        );
    }
    events::record_all(txn, announcements)
        .await
        .map_err(|error| match error {
            // The database's trouble, not the event's: left for a later try.
            AppError::Unavailable | AppError::Contention(_) => {
                HandlerError::Database(DbErr::Custom(error.to_string()))
            }
            other => HandlerError::Failed(other.to_string()),
        })
}
