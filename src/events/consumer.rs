//! What every consumer of the event log shares, whatever feeds it (the PostgreSQL log or a
//! JetStream consumer): the inbox that makes a redelivered event change nothing, per-aggregate
//! ordering that drops stale events, bounded retries, and dead letters that never block the
//! events behind them.
use std::{future::Future, time::Duration};

use crate::db::Database;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, Statement, TransactionTrait};

use super::log::StoredEvent;

/// A consumer's reaction to events. Its name keys its checkpoint, inbox and dead letters.
pub trait Handler: Send + Sync + 'static {
    const NAME: &'static str;

    /// Whether an event older than the newest version already handled of its aggregate is stale
    /// (acknowledged and ignored). Right for a consumer that keeps an aggregate's latest state;
    /// a consumer whose effects do not depend on order (each event its own record) sets it false,
    /// since competing instances may handle two events of one aggregate out of order.
    const ORDERED: bool = true;

    /// The event types this consumer reads; others are skipped without a trace (and read from the
    /// log without their payloads). The only say in what it reads, so both sources agree.
    const WANTED: &'static [&'static str];

    /// Applies one event inside `txn`, which also records it in the inbox.
    fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &StoredEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies fresh events of an unordered consumer's batch at once, inside `txn` (see
    /// [`handle_batch_unordered`]). One by one unless the handler can do better, such as one
    /// multi-row insert; any refusal sends the whole batch down the careful path.
    fn handle_many(
        &self,
        txn: &DatabaseTransaction,
        events: &[&StoredEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for event in events {
                self.handle(txn, event).await?;
            }
            Ok(())
        }
    }
}

fn wants<H: Handler>(event: &StoredEvent) -> bool {
    H::WANTED.contains(&event.event_type.as_str())
}

#[derive(Debug)]
pub enum HandlerError {
    /// The event can never be applied (bad payload, unknown version): dead-lettered at once.
    Poison(String),
    /// This attempt failed; another may succeed.
    Failed(String),
    /// The database failed (timeout, lost connection): the event is not the problem, so it is
    /// neither retried here nor dead-lettered, but left for a later read or redelivery.
    Database(DbErr),
}

impl From<DbErr> for HandlerError {
    fn from(error: DbErr) -> Self {
        Self::Database(error)
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already in the inbox: a redelivery or a replay.
    Duplicate,
    /// The consumer has already seen a newer version of this aggregate.
    Stale,
    /// Not a type this consumer reads.
    Skipped,
    DeadLettered,
}

/// Attempts per event before it is dead-lettered, and the pause after each failure.
pub const ATTEMPTS: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(200)];

/// Handles one event: in one transaction, the inbox row, the aggregate's version and the
/// handler's effect. Retried a few times, then dead-lettered. Errs only when the database itself
/// fails (the caller retries the event later). `db` may be a transaction: then each attempt is a
/// savepoint in it, and a batch of events commits once.
pub async fn process<H: Handler>(
    db: &impl TransactionTrait<Transaction = DatabaseTransaction>,
    handler: &H,
    event: &StoredEvent,
) -> Result<Outcome, DbErr> {
    if !wants::<H>(event) {
        return Ok(Outcome::Skipped);
    }
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let txn = db.begin().await?;
        match apply(&txn, handler, event).await {
            Ok(outcome) => {
                txn.commit().await?;
                return Ok(outcome);
            }
            Err(HandlerError::Database(error)) => {
                let _ = txn.rollback().await;
                return Err(error);
            }
            Err(HandlerError::Poison(reason)) => {
                txn.rollback().await?;
                dead_letter(db, H::NAME, event, attempt, &reason).await?;
                return Ok(Outcome::DeadLettered);
            }
            Err(HandlerError::Failed(reason)) => {
                txn.rollback().await?;
                tracing::warn!(consumer = H::NAME, event = %event.id, attempt, %reason, "event handler failed");
                last_error = reason;
                if let Some(pause) = BACKOFF.get(attempt as usize - 1) {
                    tokio::time::sleep(*pause).await;
                }
            }
        }
    }
    dead_letter(db, H::NAME, event, ATTEMPTS, &last_error).await?;
    Ok(Outcome::DeadLettered)
}

/// The fast path for a batch of an unordered consumer, inside the batch's transaction: one
/// statement claims every wanted event in the inbox, then the handler runs on the fresh ones with no
/// savepoints. Returns `false`, having possibly written part of the batch, as soon as the handler
/// refuses an event: the caller must roll the transaction back and take the careful path
/// ([`process`] per event), where the refusal is retried and dead-lettered on its own.
pub async fn handle_batch_unordered<H: Handler>(
    txn: &DatabaseTransaction,
    handler: &H,
    events: &[StoredEvent],
) -> Result<bool, DbErr> {
    debug_assert!(
        !H::ORDERED,
        "ordered consumers check versions event by event"
    );
    let wanted: Vec<&StoredEvent> = events.iter().filter(|event| wants::<H>(event)).collect();
    if wanted.is_empty() {
        return Ok(true);
    }
    let ids = crate::db::array(
        sea_orm::sea_query::ArrayType::String,
        wanted
            .iter()
            .map(|event| sea_orm::Value::from(event.id.to_string()))
            .collect(),
    );
    let fresh: std::collections::HashSet<uuid::Uuid> = txn
        .query_all_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO event_inbox (consumer, event_id) SELECT $1, id::uuid FROM unnest($2::text[]) AS id \
             ON CONFLICT DO NOTHING RETURNING event_id",
            [H::NAME.into(), ids],
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<uuid::Uuid>("", "event_id"))
        .collect::<Result<_, _>>()?;
    let fresh: Vec<&StoredEvent> = wanted
        .into_iter()
        .filter(|event| fresh.contains(&event.id))
        .collect();
    match handler.handle_many(txn, &fresh).await {
        Ok(()) => Ok(true),
        Err(HandlerError::Database(error)) => Err(error),
        Err(HandlerError::Poison(_) | HandlerError::Failed(_)) => Ok(false),
    }
}

async fn apply<H: Handler>(
    txn: &DatabaseTransaction,
    handler: &H,
    event: &StoredEvent,
) -> Result<Outcome, HandlerError> {
    let fresh = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO event_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [H::NAME.into(), event.id.into()],
        ))
        .await?
        .rows_affected()
        == 1;
    if !fresh {
        return Ok(Outcome::Duplicate);
    }
    if !H::ORDERED {
        handler.handle(txn, event).await?;
        return Ok(Outcome::Applied);
    }
    let newer = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO event_aggregate_versions (consumer, aggregate_type, aggregate_id, version) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version \
             WHERE event_aggregate_versions.version < EXCLUDED.version",
            [
                H::NAME.into(),
                event.aggregate_type.clone().into(),
                event.aggregate_id.into(),
                event.aggregate_version.into(),
            ],
        ))
        .await?
        .rows_affected()
        == 1;
    if !newer {
        return Ok(Outcome::Stale);
    }
    handler.handle(txn, event).await?;
    Ok(Outcome::Applied)
}

/// Keeps the event with why it failed, and marks it handled so no redelivery tries it again
/// until an operator re-drives it.
async fn dead_letter(
    db: &impl TransactionTrait<Transaction = DatabaseTransaction>,
    consumer: &str,
    event: &StoredEvent,
    attempts: u32,
    reason: &str,
) -> Result<(), DbErr> {
    tracing::error!(consumer, event = %event.id, event_type = %event.event_type, %reason, "event dead-lettered");
    let envelope =
        serde_json::to_string(event).map_err(|error| DbErr::Custom(error.to_string()))?;
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO event_dead_letters (consumer, event_id, event, attempts, last_error) \
         VALUES ($1, $2, $3::jsonb, $4, $5) \
         ON CONFLICT (consumer, event_id) DO UPDATE SET attempts = EXCLUDED.attempts, \
         last_error = EXCLUDED.last_error, failed_at = now()",
        [
            consumer.into(),
            event.id.into(),
            envelope.into(),
            i32::try_from(attempts).unwrap_or(i32::MAX).into(),
            reason.into(),
        ],
    ))
    .await?;
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO event_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [consumer.into(), event.id.into()],
    ))
    .await?;
    txn.commit().await
}

/// One dead letter, as `events dead-letters` lists it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub event_id: uuid::Uuid,
    pub attempts: i32,
    pub last_error: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
    pub event: serde_json::Value,
}

pub async fn dead_letters(
    conn: &impl ConnectionTrait,
    consumer: Option<&str>,
) -> Result<Vec<DeadLetter>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT id, consumer, event_id, attempts, last_error, failed_at, event::text AS event \
             FROM event_dead_letters WHERE $1::text IS NULL OR consumer = $1 ORDER BY id",
            [consumer.map(String::from).into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let event: String = row.try_get("", "event")?;
            Ok(DeadLetter {
                id: row.try_get("", "id")?,
                consumer: row.try_get("", "consumer")?,
                event_id: row.try_get("", "event_id")?,
                attempts: row.try_get("", "attempts")?,
                last_error: row.try_get("", "last_error")?,
                failed_at: row.try_get("", "failed_at")?,
                event: serde_json::from_str(&event)
                    .map_err(|error| DbErr::Custom(error.to_string()))?,
            })
        })
        .collect()
}

/// Hands dead letter `id` of this handler's consumer to it again: out of the inbox, handled, and
/// out of the dead-letter store only once handled (dead-lettered again, its row is updated).
pub async fn redrive<H: Handler>(
    db: &Database,
    handler: &H,
    id: i64,
) -> Result<Option<Outcome>, DbErr> {
    let Some(letter) = dead_letters(db, Some(H::NAME))
        .await?
        .into_iter()
        .find(|letter| letter.id == id)
    else {
        return Ok(None);
    };
    let event: StoredEvent = serde_json::from_value(letter.event)
        .map_err(|error| DbErr::Custom(format!("dead letter {id}: {error}")))?;
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "DELETE FROM event_inbox WHERE consumer = $1 AND event_id = $2",
        [H::NAME.into(), event.id.into()],
    ))
    .await?;
    let outcome = process(db, handler, &event).await?;
    if outcome != Outcome::DeadLettered {
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM event_dead_letters WHERE id = $1",
            [id.into()],
        ))
        .await?;
    }
    Ok(Some(outcome))
}

pub async fn dead_letter_count(conn: &impl ConnectionTrait, consumer: &str) -> Result<u64, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT count(*) AS letters FROM event_dead_letters WHERE consumer = $1",
            [consumer.into()],
        ))
        .await?;
    let letters: i64 = match row {
        Some(row) => row.try_get("", "letters")?,
        None => 0,
    };
    Ok(u64::try_from(letters).unwrap_or(0))
}
