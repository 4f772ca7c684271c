//! The writer: contexts record what happened in the outbox, inside the transaction that made the
//! change, so an event exists exactly when its change was committed.
use sea_orm::{ConnectionTrait, Statement, Value, sea_query::ArrayType};
use uuid::Uuid;

use super::{
    catalogue::{EventType, Payload},
    trace,
};
use crate::error::{AppError, violated_constraint};

/// An event ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: EventType,
    pub aggregate_id: Uuid,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn of<P: Payload>(payload: &P) -> Result<Self, AppError> {
        Ok(Self {
            // v7: time-ordered, so ids sort roughly as the events happened.
            id: Uuid::now_v7(),
            event_type: P::TYPE,
            aggregate_id: payload.aggregate_id(),
            // A payload that does not serialise is a bug; it fails the change, never drops the event.
            payload: serde_json::to_value(payload).map_err(AppError::internal)?,
        })
    }
}

/// Records one event in the caller's transaction.
pub async fn record<P: Payload>(conn: &impl ConnectionTrait, payload: &P) -> Result<(), AppError> {
    record_all(conn, vec![NewEvent::of(payload)?]).await
}

/// Records events in the caller's transaction, in one statement, in the order given. Each gets
/// the next `aggregateVersion` of its aggregate: the caller holds the aggregate's row lock (or
/// created it), so no other writer of that aggregate runs between this statement's snapshot and
/// its commit; the unique constraint is the backstop.
pub async fn record_all(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent>,
) -> Result<(), AppError> {
    if events.is_empty() {
        return Ok(());
    }
    const RECORD: &str = r#"
INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, traceparent, payload)
SELECT e.id::uuid, e.type, e.version::int4, e.aggregate_type, e.aggregate_id::uuid,
       COALESCE((SELECT max(o.aggregate_version) FROM outbox o
                 WHERE o.aggregate_type = e.aggregate_type AND o.aggregate_id = e.aggregate_id::uuid), 0)
         + row_number() OVER (PARTITION BY e.aggregate_type, e.aggregate_id ORDER BY e.ordinal),
       $7, e.payload::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     WITH ORDINALITY AS e(id, type, version, aggregate_type, aggregate_id, payload, ordinal)
ORDER BY e.ordinal"#;
    let column = |value: fn(&NewEvent) -> String| {
        Value::Array(
            ArrayType::String,
            Some(Box::new(
                events
                    .iter()
                    .map(|event| Value::from(value(event)))
                    .collect(),
            )),
        )
    };
    let statement = Statement::from_sql_and_values(
        conn.get_database_backend(),
        RECORD,
        [
            column(|event| event.id.to_string()),
            column(|event| event.event_type.name().to_string()),
            column(|event| event.event_type.version().to_string()),
            column(|event| event.event_type.aggregate_type().to_string()),
            column(|event| event.aggregate_id.to_string()),
            column(|event| event.payload.to_string()),
            trace::current().into(),
        ],
    );
    conn.execute_raw(statement).await.map_err(|error| {
        match violated_constraint(&error).as_deref() {
            // Two writers of one aggregate without its lock; the retry numbers it right.
            Some("outbox_aggregate_version_key") => AppError::Contention,
            _ => error.into(),
        }
    })?;
    Ok(())
}
