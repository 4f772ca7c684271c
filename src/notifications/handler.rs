//! Turning events into notifications. Each payload is read through a struct of only the fields
//! this consumer needs (a weak schema: anything else in the payload is ignored).
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, Statement};
use serde::{Deserialize, de::DeserializeOwned};
use uuid::Uuid;

use super::service::Kind;
use crate::{
    error::AppError,
    events::{
        self, StoredEvent,
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

const WANTED: [&str; 5] = [
    "visit.accepted",
    "visit.completed",
    "visit.cancelled",
    "visit.expired",
    "ledger.transfer_recorded",
];

impl Handler for NotificationsHandler {
    const NAME: &'static str = "notifications";
    /// Each event makes its own notification, whatever came before: none is stale.
    const ORDERED: bool = false;

    fn wants(&self, event_type: &str) -> bool {
        WANTED.contains(&event_type)
    }

    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
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
        if let Some(notice) = notice {
            notice.insert(txn, event.id, event.occurred_at).await?;
        }
        Ok(())
    }
}

fn facts<T: DeserializeOwned>(event: &StoredEvent) -> Result<T, HandlerError> {
    serde_json::from_value(event.payload.clone()).map_err(|error| {
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

impl Notice {
    async fn insert(
        self,
        txn: &DatabaseTransaction,
        event_id: Uuid,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let id = Uuid::now_v7();
        // A redelivered event inserts nothing and so records nothing: the event says a
        // notification was added, once.
        let inserted = txn
            .execute_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "INSERT INTO notifications (id, recipient_id, kind, visit_id, actor_id, minutes, event_id, occurred_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id, recipient_id) DO NOTHING",
                [
                    id.into(),
                    self.recipient.into(),
                    self.kind.as_str().into(),
                    self.visit.into(),
                    self.actor.into(),
                    self.minutes.into(),
                    event_id.into(),
                    occurred_at.into(),
                ],
            ))
            .await?
            .rows_affected();
        if inserted == 1 {
            events::record(
                txn,
                &NotificationAdded {
                    notification_id: id,
                    recipient_id: self.recipient,
                    kind: self.kind.as_str().into(),
                },
            )
            .await
            .map_err(|error| match error {
                // The database's trouble, not the event's: left for a later try.
                AppError::Unavailable | AppError::Contention => {
                    HandlerError::Database(DbErr::Custom(error.to_string()))
                }
                other => HandlerError::Failed(other.to_string()),
            })?;
        }
        Ok(())
    }
}
