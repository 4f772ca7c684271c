//! The writer: contexts record what happened in the outbox, inside the transaction that made the
//! change, so an event exists exactly when its change was committed.
use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Statement, Value};
use uuid::Uuid;

use super::{
    catalogue::{EventType, Payload},
    trace,
};
use crate::error::{AppError, Contention, violated_constraint};

/// At most one transaction per instance carries a `NOTIFY` this often. A `NOTIFY` serialises the
/// commits that carry it (PostgreSQL holds one lock for its notification queue through the
/// commit's flush, so they lose group commit): on every commit it cost pgbench's `request` script
/// 43% (3,781-3,885 -> 2,150-2,235 tx/s, p50 9.4 -> 20 ms). Spaced, it wakes the feeds as often as
/// they can use; what commits in between is found by their trailing reads (`feed`).
pub const NOTIFY_SPACING: Duration = Duration::from_millis(10);

static LAST_NOTIFY_MS: AtomicU64 = AtomicU64::new(0);

/// This transaction carries the wake-up for its window.
struct NotifyClaim {
    claimed: u64,
    previous: u64,
}

impl NotifyClaim {
    /// Whether this transaction should carry the wake-up (and, if so, claims it).
    fn take() -> Option<Self> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1_000_000);
        let last = LAST_NOTIFY_MS.load(Ordering::Relaxed);
        let spacing = u64::try_from(NOTIFY_SPACING.as_millis()).unwrap_or(u64::MAX);
        (now.saturating_sub(last) >= spacing
            && LAST_NOTIFY_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then_some(Self {
            claimed: now,
            previous: last,
        })
    }

    /// The statement failed, so its NOTIFY will not be sent: let the next writer send one.
    fn give_back(self) {
        let _ = LAST_NOTIFY_MS.compare_exchange(
            self.claimed,
            self.previous,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

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
    let insert = OutboxInsert::new(events, 1);
    // The wake-up for the live feeds rides in the same statement (no extra round trip) and is
    // delivered at commit.
    let sql = match insert.wake_up("recorded") {
        Some(wake_up) => format!("WITH recorded AS ({}) {wake_up}", insert.sql(None)),
        None => insert.sql(None),
    };
    let statement =
        Statement::from_sql_and_values(conn.get_database_backend(), sql, insert.values.clone());
    match conn.execute_raw(statement).await {
        Ok(_) => Ok(()),
        Err(error) => Err(insert.failed(error)),
    }
}

/// The outbox rows for some events, as SQL a caller can run on its own ([`record_all`]) or inside
/// a statement of its own (a CTE, so the change and its events are one round trip). Each event
/// gets the next `aggregateVersion` of its aggregate: the caller holds the aggregate's row lock
/// (or created it), so no other writer of that aggregate runs between this statement's snapshot
/// and its commit; the unique constraint is the backstop. A plain multi-row `VALUES` (measured
/// with pgbench: a third of the cost of an `unnest` of arrays with a window function).
pub struct OutboxInsert {
    rows: Vec<String>,
    /// Bound from placeholder `$first` on, in order.
    pub values: Vec<Value>,
    claim: Option<NotifyClaim>,
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
        // The statement's snapshot cannot see its own earlier rows: count them here.
        let earlier_of_same: Vec<usize> = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                events[..index]
                    .iter()
                    .filter(|other| {
                        other.aggregate_id == event.aggregate_id
                            && other.event_type.aggregate_type()
                                == event.event_type.aggregate_type()
                    })
                    .count()
            })
            .collect();
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
            rows,
            values,
            claim: NotifyClaim::take(),
        }
    }

    /// The `INSERT ... RETURNING 1`; with `only_if` (an SQL condition), the rows go in only when
    /// it holds.
    pub fn sql(&self, only_if: Option<&str>) -> String {
        let rows = self.rows.join(", ");
        match only_if {
            None => format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES {rows} RETURNING 1"),
            Some(condition) => format!(
                "INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT * FROM (VALUES {rows}) AS event({OUTBOX_COLUMNS}) \
                 WHERE {condition} RETURNING 1"
            ),
        }
    }

    /// When this statement carries the live feeds' wake-up: a `SELECT` that sends it if the rows
    /// named `recorded` (the insert's CTE) went in. It is delivered at commit.
    pub fn wake_up(&self, recorded: &str) -> Option<String> {
        self.claim.as_ref().map(|_| {
            format!(
                "SELECT pg_notify('{}', '') FROM {recorded} LIMIT 1",
                super::feed::CHANNEL
            )
        })
    }

    /// The statement ran but recorded nothing (its condition did not hold): its wake-up was not
    /// sent either, so the next writer sends one.
    pub fn not_recorded(self) {
        if let Some(claim) = self.claim {
            claim.give_back();
        }
    }

    /// The statement failed: its wake-up was not sent (the next writer sends one), and what the
    /// failure means.
    pub fn failed(self, error: sea_orm::DbErr) -> AppError {
        if let Some(claim) = self.claim {
            claim.give_back();
        }
        match violated_constraint(&error).as_deref() {
            // Two writers of one aggregate without its lock; the retry numbers it right.
            Some("outbox_aggregate_version_key") => {
                AppError::Contention(Contention::SerializationFailure)
            }
            _ => error.into(),
        }
    }
}
