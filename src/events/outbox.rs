//! The writer: contexts record what happened in the outbox, inside the transaction that made the
//! change, so an event exists exactly when its change was committed.
use sea_orm::{ConnectionTrait, Statement, Value};
use uuid::Uuid;

use super::{
    catalogue::{EventType, Payload},
    trace,
};
use crate::{
    db::array,
    error::{AppError, Contention, violated_constraint},
};

/// An event ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: EventType,
    pub aggregate_id: Uuid,
    /// The payload as JSON text, serialised once (it travels to PostgreSQL as text).
    pub payload: String,
}

impl NewEvent {
    pub fn of<P: Payload>(payload: &P) -> Result<Self, AppError> {
        Ok(Self {
            // v7: time-ordered, so ids sort roughly as the events happened.
            id: Uuid::now_v7(),
            event_type: P::TYPE,
            aggregate_id: payload.aggregate_id(),
            // A payload that does not serialise is a bug; it fails the change, never drops the event.
            payload: serde_json::to_string(payload).map_err(AppError::internal)?,
        })
    }
}

/// Records one event in the caller's transaction.
pub async fn record<P: Payload>(conn: &impl ConnectionTrait, payload: &P) -> Result<(), AppError> {
    record_all(conn, vec![NewEvent::of(payload)?]).await
}

/// Records events in the caller's transaction, in one statement, in the order given (see
/// [`OutboxInsert`]).
pub async fn record_all(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent>,
) -> Result<(), AppError> {
    if events.is_empty() {
        return Ok(());
    }
    let insert = if events.len() >= ARRAY_INSERT_FROM {
        OutboxInsert::of_arrays(events)
    } else {
        OutboxInsert::new(events, 1)
    };
    let statement = Statement::from_sql_and_values(
        conn.get_database_backend(),
        insert.sql(None),
        insert.values.clone(),
    );
    match conn.execute_raw(statement).await {
        Ok(_) => Ok(()),
        Err(error) => Err(insert.failed(error)),
    }
}

/// From this many events on, [`record_all`] binds them as arrays: one statement text for any
/// count, parsed and planned once per connection, where a `VALUES` list of each new length is a
/// new statement (the notifications consumer records a batch of a different size every time: 41
/// texts in a five-second bench run, each planned with a subquery per row).
const ARRAY_INSERT_FROM: usize = 4;

/// The outbox rows for some events, as SQL a caller can run on its own ([`record_all`]) or inside
/// a statement of its own (a CTE, so the change and its events are one round trip). Each event
/// gets the next `aggregateVersion` of its aggregate: the caller holds the aggregate's row lock
/// (or created it), so no other writer of that aggregate runs between this statement's snapshot
/// and its commit; the unique constraint is the backstop. A plain multi-row `VALUES` for a few events (measured
/// with pgbench: a third of the cost of an `unnest` of arrays with a window function), arrays for
/// a batch (made only by [`record_all`], numbered from `$1`).
pub struct OutboxInsert {
    /// The `VALUES` rows, or `None` for the array form (whose statement is [`ARRAY_INSERT`]).
    rows: Option<Vec<String>>,
    /// Bound from placeholder `$first` on, in order.
    pub values: Vec<Value>,
}

/// The array form's statement. The order of the arrays is the order of the positions the rows
/// take (`WITH ORDINALITY`, then `ORDER BY`: an `INSERT ... SELECT` draws its defaults in the
/// order the rows arrive).
const ARRAY_INSERT: &str = "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, \
     aggregate_version, traceparent, payload) \
     SELECT e.id::uuid, e.type, e.version, e.aggregate_type, e.aggregate_id::uuid, \
     COALESCE((SELECT max(o.aggregate_version) FROM outbox o \
     WHERE o.aggregate_type = e.aggregate_type AND o.aggregate_id = e.aggregate_id::uuid), 0) + e.earlier, \
     $7, e.payload::jsonb \
     FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::int8[], $8::text[]) \
     WITH ORDINALITY AS e(id, type, version, aggregate_type, aggregate_id, earlier, payload, n) \
     ORDER BY e.n RETURNING 1";

/// For each event, how many before it in the list belong to its aggregate: the statement's
/// snapshot cannot see its own earlier rows, so they are counted here.
fn earlier_of_same(events: &[NewEvent]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<(&str, Uuid), usize> =
        std::collections::HashMap::with_capacity(events.len());
    events
        .iter()
        .map(|event| {
            let count = seen
                .entry((event.event_type.aggregate_type(), event.aggregate_id))
                .or_insert(0);
            *count += 1;
            *count - 1
        })
        .collect()
}

const OUTBOX_COLUMNS: &str =
    "id, type, version, aggregate_type, aggregate_id, aggregate_version, traceparent, payload";

impl OutboxInsert {
    /// `first`: the number of the first placeholder these rows use.
    pub fn new(events: Vec<NewEvent>, first: usize) -> Self {
        const COLUMNS: usize = 8;
        let traceparent = trace::current();
        let mut rows = Vec::with_capacity(events.len());
        let mut values: Vec<Value> = Vec::with_capacity(events.len() * COLUMNS);
        let earlier_of_same = earlier_of_same(&events);
        for (index, (event, earlier_of_same)) in events.into_iter().zip(earlier_of_same).enumerate()
        {
            let p = first - 1 + index * COLUMNS;
            rows.push(format!(
                "(${}::uuid, ${}, ${}::int4, ${}, ${}::uuid, COALESCE((SELECT max(o.aggregate_version) FROM outbox o \
                  WHERE o.aggregate_type = ${} AND o.aggregate_id = ${}), 0) + ${}, ${}, ${}::jsonb)",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8
            ));
            values.extend([
                event.id.into(),
                event.event_type.name().into(),
                event.event_type.version().into(),
                event.event_type.aggregate_type().into(),
                event.aggregate_id.into(),
                i64::try_from(earlier_of_same + 1)
                    .unwrap_or(i64::MAX)
                    .into(),
                traceparent.clone().into(),
                event.payload.into(),
            ]);
        }
        Self {
            rows: Some(rows),
            values,
        }
    }

    /// The same rows as arrays, one per column, bound from `$1`.
    fn of_arrays(events: Vec<NewEvent>) -> Self {
        use sea_orm::sea_query::ArrayType;
        let earlier = earlier_of_same(&events);
        let mut ids = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut aggregate_types = Vec::with_capacity(events.len());
        let mut aggregate_ids = Vec::with_capacity(events.len());
        let mut numbers = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for (event, earlier) in events.into_iter().zip(earlier) {
            ids.push(Value::from(event.id.to_string()));
            types.push(Value::from(event.event_type.name()));
            versions.push(Value::from(event.event_type.version()));
            aggregate_types.push(Value::from(event.event_type.aggregate_type()));
            aggregate_ids.push(Value::from(event.aggregate_id.to_string()));
            numbers.push(Value::from(i64::try_from(earlier + 1).unwrap_or(i64::MAX)));
            payloads.push(Value::from(event.payload));
        }
        Self {
            rows: None,
            values: vec![
                array(ArrayType::String, ids),
                array(ArrayType::String, types),
                array(ArrayType::Int, versions),
                array(ArrayType::String, aggregate_types),
                array(ArrayType::String, aggregate_ids),
                array(ArrayType::BigInt, numbers),
                trace::current().into(),
                array(ArrayType::String, payloads),
            ],
        }
    }

    /// The `INSERT ... RETURNING 1`; with `only_if` (an SQL condition), the rows go in only when
    /// it holds.
    pub fn sql(&self, only_if: Option<&str>) -> String {
        let Some(rows) = &self.rows else {
            debug_assert!(
                only_if.is_none(),
                "only record_all makes the array form, and it sets no condition"
            );
            return ARRAY_INSERT.to_string();
        };
        let rows = rows.join(", ");
        match only_if {
            None => format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES {rows} RETURNING 1"),
            Some(condition) => format!(
                "INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT * FROM (VALUES {rows}) AS event({OUTBOX_COLUMNS}) \
                 WHERE {condition} RETURNING 1"
            ),
        }
    }

    /// What the statement's failure means.
    pub fn failed(self, error: sea_orm::DbErr) -> AppError {
        match violated_constraint(&error).as_deref() {
            // Two writers of one aggregate without its lock; the retry numbers it right.
            Some("outbox_aggregate_version_key") => {
                AppError::Contention(Contention::SerializationFailure)
            }
            _ => error.into(),
        }
    }
}
