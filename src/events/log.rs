//! The reader: the outbox read back as an ordered log that never skips an event.
//!
//! Rows are read in `(txid, position)` order and only below the oldest transaction still running
//! (`pg_snapshot_xmin`). Every transaction with a lower id has ended, and every new one gets a
//! higher id, so nothing can ever appear behind a reader's cursor. A reader keyed on `position`
//! alone is not safe: a transaction that took a lower position can commit after a higher one was
//! read, and the reader, already past it, never sees it.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Statement};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A place in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub txid: u64,
    pub position: i64,
}

/// An event as it was recorded: the envelope of every consumer and of the broker's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: i32,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub aggregate_version: i64,
    pub occurred_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
    /// The outbox's sequence number: unique and increasing, but not the log's order (see above).
    pub position: i64,
    #[serde(skip)]
    pub txid: u64,
}

impl StoredEvent {
    pub fn log_position(&self) -> LogPosition {
        LogPosition {
            txid: self.txid,
            position: self.position,
        }
    }

    /// `home_visits.<aggregateType>.<type>`, the broker subject it is published on.
    pub fn subject(&self) -> String {
        format!("home_visits.{}.{}", self.aggregate_type, self.event_type)
    }

    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        let payload: String = row.try_get("", "payload")?;
        Self::from_row_with(row, payload)
    }

    fn from_row_with(row: &QueryResult, payload: String) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get("", "id")?,
            event_type: row.try_get("", "type")?,
            version: row.try_get("", "version")?,
            aggregate_type: row.try_get("", "aggregate_type")?,
            aggregate_id: row.try_get("", "aggregate_id")?,
            aggregate_version: row.try_get("", "aggregate_version")?,
            occurred_at: row.try_get("", "occurred_at")?,
            traceparent: row.try_get("", "traceparent")?,
            payload: serde_json::from_str(&payload)
                .map_err(|error| DbErr::Custom(format!("outbox payload: {error}")))?,
            position: row.try_get("", "position")?,
            txid: txid_of(row)?,
        })
    }
}

/// The position a `txid::text AS txid, position` row names; no row is the log's start.
fn position_in(row: Option<QueryResult>) -> Result<LogPosition, DbErr> {
    match row {
        None => Ok(LogPosition::default()),
        Some(row) => Ok(LogPosition {
            txid: txid_of(&row)?,
            position: row.try_get("", "position")?,
        }),
    }
}

/// `txid` as the queries select it (`txid::text`: sqlx has no xid8 type).
fn txid_of(row: &QueryResult) -> Result<u64, DbErr> {
    let txid: String = row.try_get("", "txid")?;
    txid.parse()
        .map_err(|error| DbErr::Custom(format!("txid {txid}: {error}")))
}

/// Puts each aggregate's events in version order, each in the places its events already hold, so
/// the order across aggregates (the log's) is kept. The log's order is safe for commits, not per
/// aggregate: a transaction can take its id before another that changes the same visit first and
/// commits first. Both become readable together (the older id holds the horizon back), so
/// reordering within what was read together is enough.
pub fn in_aggregate_order(events: &mut Vec<StoredEvent>) {
    let mut places: std::collections::HashMap<(&str, Uuid), Vec<usize>> =
        std::collections::HashMap::new();
    let mut needed = false;
    let mut newest: std::collections::HashMap<(&str, Uuid), i64> = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let key = (event.aggregate_type.as_str(), event.aggregate_id);
        places.entry(key).or_default().push(index);
        let seen = newest.entry(key).or_insert(i64::MIN);
        needed |= *seen > event.aggregate_version;
        *seen = (*seen).max(event.aggregate_version);
    }
    if !needed {
        return;
    }
    let groups: Vec<Vec<usize>> = places.into_values().collect();
    let mut taken: Vec<Option<StoredEvent>> =
        std::mem::take(events).into_iter().map(Some).collect();
    let mut placed: Vec<Option<StoredEvent>> = (0..taken.len()).map(|_| None).collect();
    for group in groups {
        let mut members: Vec<StoredEvent> = group.iter().filter_map(|&i| taken[i].take()).collect();
        members.sort_by_key(|event| event.aggregate_version);
        for (&index, event) in group.iter().zip(members) {
            placed[index] = Some(event);
        }
    }
    *events = placed.into_iter().flatten().collect();
}

/// See the `danger-position-reader` feature: true only in a build made to prove the harness.
pub const READS_BY_POSITION_ONLY: bool = cfg!(feature = "danger-position-reader");

/// Every column of an event but its payload (a macro so the full list can be built from it).
macro_rules! header_columns {
    () => {
        "txid::text AS txid, position, id, type, version, aggregate_type, aggregate_id, \
         aggregate_version, occurred_at, traceparent"
    };
}
const HEADER_COLUMNS: &str = header_columns!();
const COLUMNS: &str = concat!(header_columns!(), ", payload::text AS payload");

/// Up to `limit` events after `after`, in log order. Events of transactions still running (and of
/// any after them) wait for a later read: that is lag, never loss.
pub async fn read_after(
    conn: &impl ConnectionTrait,
    after: LogPosition,
    limit: u64,
) -> Result<Vec<StoredEvent>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            format!("SELECT {COLUMNS} FROM outbox {READABLE_AFTER} LIMIT $3"),
            readable_after(after, limit),
        ))
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// Every event after `after` up to and including `through`, in log order: a stretch read before
/// (see `stretch`), all of it readable.
pub async fn read_through(
    conn: &impl ConnectionTrait,
    after: LogPosition,
    through: LogPosition,
) -> Result<Vec<StoredEvent>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            format!(
                "SELECT {COLUMNS} FROM outbox WHERE (outbox.txid, outbox.position) > ($1::text::xid8, $2) \
                 AND (outbox.txid, outbox.position) <= ($3::text::xid8, $4) \
                 ORDER BY outbox.txid, outbox.position"
            ),
            [
                after.txid.to_string().into(),
                after.position.into(),
                through.txid.to_string().into(),
                through.position.into(),
            ],
        ))
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// The readable rows after `$1` (txid) and `$2` (position), in log order, for `LIMIT $3`
/// (see [`readable_after`]).
const READABLE_AFTER: &str = if READS_BY_POSITION_ONLY {
    "WHERE position > $2 AND $1::text IS NOT NULL ORDER BY position"
} else {
    // `outbox.txid`, not `txid`: the bare name in ORDER BY would be the selected text column,
    // and as text "10" sorts before "9".
    "WHERE (outbox.txid, outbox.position) > ($1::text::xid8, $2) \
     AND outbox.txid < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY outbox.txid, outbox.position"
};

/// The values of [`READABLE_AFTER`]'s placeholders.
fn readable_after(after: LogPosition, limit: u64) -> Vec<sea_orm::Value> {
    vec![
        after.txid.to_string().into(),
        after.position.into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ]
}

/// What one reader took from a stretch of the log: the events of the types it reads, and how far
/// the stretch went (its checkpoint moves there, past the events it does not read).
#[derive(Debug, Default)]
pub struct Stretch {
    pub events: Vec<StoredEvent>,
    /// The last place read, wanted or not; `None` when nothing was readable.
    pub end: Option<LogPosition>,
    /// How many events the stretch held, wanted or not.
    pub len: usize,
}

/// Like [`read_after`], for a reader of only some event types: the others are passed over
/// without their payloads, which PostgreSQL would otherwise turn into text and the reader parse
/// (a consumer of completions reads about half of what the log holds).
pub async fn read_wanted_after(
    conn: &impl ConnectionTrait,
    after: LogPosition,
    limit: u64,
    wanted: &[&str],
) -> Result<Stretch, DbErr> {
    let sql = format!(
        "SELECT {HEADER_COLUMNS}, CASE WHEN type = ANY($4::text[]) THEN payload::text END AS payload \
         FROM outbox {READABLE_AFTER} LIMIT $3"
    );
    let mut values = readable_after(after, limit);
    values.push(crate::db::array(
        sea_orm::sea_query::ArrayType::String,
        wanted
            .iter()
            .map(|event_type| (*event_type).into())
            .collect(),
    ));
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            sql,
            values,
        ))
        .await?;
    let mut stretch = Stretch {
        len: rows.len(),
        ..Stretch::default()
    };
    for row in &rows {
        let payload: Option<String> = row.try_get("", "payload")?;
        match payload {
            Some(payload) => {
                let event = StoredEvent::from_row_with(row, payload)?;
                stretch.end = Some(event.log_position());
                stretch.events.push(event);
            }
            None => {
                stretch.end = Some(LogPosition {
                    txid: txid_of(row)?,
                    position: row.try_get("", "position")?,
                });
            }
        }
    }
    Ok(stretch)
}

/// The last readable place in the log: what is recorded after it is new to a reader starting now.
pub async fn end(conn: &impl ConnectionTrait) -> Result<LogPosition, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            // Qualified: a bare `txid` in ORDER BY would sort the selected text.
            "SELECT txid::text AS txid, position FROM outbox \
             WHERE outbox.txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY outbox.txid DESC, outbox.position DESC LIMIT 1",
        ))
        .await?;
    position_in(row)
}

/// Where the event recorded at `position` sits in the log, to start reading just after it.
pub async fn position_of(
    conn: &impl ConnectionTrait,
    position: i64,
) -> Result<Option<LogPosition>, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT txid::text AS txid FROM outbox WHERE position = $1",
            [position.into()],
        ))
        .await?;
    row.map(|row| {
        Ok(LogPosition {
            txid: txid_of(&row)?,
            position,
        })
    })
    .transpose()
}

/// When the named reader last moved its checkpoint (`None` if it never did).
pub async fn checkpoint_moved_at(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT updated_at FROM event_checkpoints WHERE name = $1",
            [name.into()],
        ))
        .await?;
    row.map(|row| row.try_get("", "updated_at")).transpose()
}

/// Where the named reader has got to (the start of the log if it never read).
pub async fn checkpoint(conn: &impl ConnectionTrait, name: &str) -> Result<LogPosition, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT txid::text AS txid, position FROM event_checkpoints WHERE name = $1",
            [name.into()],
        ))
        .await?;
    position_in(row)
}

/// Moves the named reader's checkpoint forward to `to`; never backward, so a reader that lost its
/// leadership and lags behind its successor cannot undo the successor's progress.
pub async fn advance_checkpoint(
    conn: &impl ConnectionTrait,
    name: &str,
    to: LogPosition,
) -> Result<(), DbErr> {
    let forward = if READS_BY_POSITION_ONLY {
        "event_checkpoints.position < EXCLUDED.position"
    } else {
        "(event_checkpoints.txid, event_checkpoints.position) < (EXCLUDED.txid, EXCLUDED.position)"
    };
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        format!(
            "INSERT INTO event_checkpoints (name, txid, position, updated_at) \
             VALUES ($1, $2::text::xid8, $3, now()) \
             ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position, \
             updated_at = now() WHERE {forward}"
        ),
        [name.into(), to.txid.to_string().into(), to.position.into()],
    ))
    .await
    .map(drop)
}

/// How far a reader is behind the log's end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Events recorded after the checkpoint (counted up to [`LAG_COUNT_LIMIT`]).
    pub events: u64,
    /// Age of the oldest of them; 0 when there are none.
    pub seconds: f64,
}

/// Counting stops here, so a probe stays cheap however far behind a reader is.
pub const LAG_COUNT_LIMIT: u64 = 100_000;

pub async fn lag(conn: &impl ConnectionTrait, name: &str) -> Result<Lag, DbErr> {
    let sql = format!(
        "WITH cp AS (SELECT COALESCE((SELECT txid FROM event_checkpoints WHERE name = $1), '0'::xid8) AS txid, \
                            COALESCE((SELECT position FROM event_checkpoints WHERE name = $1), 0) AS position), \
              behind AS (SELECT o.occurred_at FROM outbox o, cp \
                         WHERE (o.txid, o.position) > (cp.txid, cp.position) \
                         ORDER BY o.txid, o.position LIMIT {LAG_COUNT_LIMIT}) \
         SELECT count(*) AS events, \
                COALESCE(extract(epoch FROM now() - min(occurred_at)), 0)::float8 AS seconds FROM behind"
    );
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            sql,
            [name.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("lag query returned no row".into()))?;
    let events: i64 = row.try_get("", "events")?;
    Ok(Lag {
        events: u64::try_from(events).unwrap_or(0),
        seconds: row.try_get("", "seconds")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate: u128, version: i64, position: i64) -> StoredEvent {
        StoredEvent {
            id: Uuid::from_u128(position as u128),
            event_type: "visit.accepted".into(),
            version: 1,
            aggregate_type: "visit".into(),
            aggregate_id: Uuid::from_u128(aggregate),
            aggregate_version: version,
            occurred_at: Utc::now(),
            traceparent: None,
            payload: serde_json::Value::Null,
            position,
            txid: 1,
        }
    }

    #[test]
    fn an_aggregates_events_are_put_in_version_order_in_their_own_places() {
        // A's version 3 was logged before its version 2 (an older transaction id); B sits between.
        let mut events = vec![
            event(1, 3, 10),
            event(2, 1, 11),
            event(1, 2, 12),
            event(3, 1, 13),
        ];
        in_aggregate_order(&mut events);
        let order: Vec<(u128, i64)> = events
            .iter()
            .map(|event| (event.aggregate_id.as_u128(), event.aggregate_version))
            .collect();
        assert_eq!(order, [(1, 2), (2, 1), (1, 3), (3, 1)]);

        let mut in_order = vec![event(1, 1, 1), event(2, 1, 2), event(1, 2, 3)];
        let before: Vec<i64> = in_order.iter().map(|event| event.position).collect();
        in_aggregate_order(&mut in_order);
        let after: Vec<i64> = in_order.iter().map(|event| event.position).collect();
        assert_eq!(before, after, "the log's order when it is already right");
    }
}
