//! A fault for the event log: a writer that takes its place in the log and commits late.
//!
//! The outbox's positions come from a sequence, taken when the row is inserted; a reader that
//! trusts them alone skips whatever commits after it read a higher one. On a real machine that
//! happens when a writer stalls between its insert and its commit (a paused process, a slow
//! network), which the randomized workload reaches only by chance. This fault makes it happen on
//! purpose, still through a real request: the harness holds a `FOR UPDATE` lock on the member's
//! `users` row, so the booking statement, having inserted the visit and its `visit.requested`
//! event, waits at its foreign-key check (which runs at the end of the statement) until the lock
//! is let go, while the rest of the workload commits events past it.
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, TransactionTrait};

use crate::{client::Session, harness::Harness};

/// How long to hold a request in a run of `run`: long enough for many commits to pass it, well
/// inside the service's lock timeout (3 s by default), and inside the run.
pub fn hold_in(run: Duration) -> Duration {
    (run / 5).min(Duration::from_millis(1500))
}

/// Registers a member, then holds one request of theirs for `hold` after it took its place in the
/// log. Returns the line for the fault log, or why the fault could not be made (then the run
/// would prove nothing about late commits).
pub async fn hold_a_request(harness: &Harness, hold: Duration) -> Result<String, String> {
    let member = harness.new_user("late").await?;
    let lock = harness
        .db
        .begin()
        .await
        .map_err(|error| error.to_string())?;
    let blocker = lock_member(&lock, &member).await?;
    let client = harness.client(0).clone();
    let token = member.token.clone();
    let mut request = tokio::spawn(async move { client.request_visit(&token, 30, None).await });

    let waiting_since = match wait_until_blocked(&lock, blocker, &request).await {
        Ok(since) => since,
        // It ended without waiting: say how, which is what a tester needs to know.
        Err(error) if request.is_finished() => {
            let outcome = (&mut request).await;
            return Err(format!("{error}: it ended first, with {outcome:?}"));
        }
        Err(error) => return Err(error),
    };
    let fault = harness.progress.fault(format!(
        "late commit: a request held {:.1}s after its insert",
        hold.as_secs_f64()
    ));
    // Taken after the held booking took its place: every later place is above it.
    let before = last_place(&lock).await?;
    tokio::time::sleep_until((waiting_since + hold).into()).await;
    let passed = committed_after(&lock, before).await?;
    lock.rollback().await.map_err(|error| error.to_string())?;

    let visit = request
        .await
        .map_err(|error| format!("the held request panicked: {error}"))?
        .map_err(|failure| format!("the held request failed: {failure:?}"))?;
    if passed == 0 {
        return Err(format!(
            "no event was recorded while a request was held for {hold:?}: the late commit proved nothing"
        ));
    }
    Ok(format!(
        "{fault} (visit {}) while {passed} later events committed",
        visit.get(..8).unwrap_or(&visit)
    ))
}

/// Locks the member's `users` row; returns the backend holding the lock.
async fn lock_member(lock: &DatabaseTransaction, member: &Session) -> Result<i32, String> {
    let row = lock
        .query_one_raw(Statement::from_sql_and_values(
            lock.get_database_backend(),
            "SELECT pg_backend_pid() AS pid FROM users WHERE id = $1::uuid FOR UPDATE",
            [member.user_id.clone().into()],
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("member {} is not in users", member.user_id))?;
    row.try_get("", "pid").map_err(|error| error.to_string())
}

/// Waits until some backend waits on `blocker`'s lock: the request is in, past its insert.
async fn wait_until_blocked<T>(
    lock: &DatabaseTransaction,
    blocker: i32,
    request: &tokio::task::JoinHandle<T>,
) -> Result<Instant, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !request.is_finished() {
        // PostgreSQL keeps one snapshot of pg_stat_activity per transaction, and this runs in the
        // lock's: without dropping it, a first look taken before the request arrived is all later
        // looks see (so after a restart, when the request is slower to come, it was never seen).
        lock.execute_unprepared("SELECT pg_stat_clear_snapshot()")
            .await
            .map_err(|error| error.to_string())?;
        let row = lock
            .query_one_raw(Statement::from_sql_and_values(
                lock.get_database_backend(),
                // Waiting on a row lock (the foreign-key check's), not on anything else.
                "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE $1 = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
                [blocker.into()],
            ))
            .await
            .map_err(|error| error.to_string())?;
        let waiting: i64 = row
            .map(|row| row.try_get("", "waiting"))
            .transpose()
            .map_err(|error| error.to_string())?
            .unwrap_or(0);
        if waiting > 0 {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the held request never waited on the member's lock".into())
}

/// The last place the outbox's sequence handed out (committed or not).
async fn last_place(conn: &impl ConnectionTrait) -> Result<i64, String> {
    scalar(
        conn,
        "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'position')::regclass), 0) AS n",
        [],
    )
    .await
}

/// Events committed by now with a place after `position` (taken after the held request's).
async fn committed_after(conn: &impl ConnectionTrait, position: i64) -> Result<i64, String> {
    scalar(
        conn,
        "SELECT count(*) AS n FROM outbox WHERE position > $1",
        [position.into()],
    )
    .await
}

async fn scalar(
    conn: &impl ConnectionTrait,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Result<i64, String> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            sql,
            values,
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no row")?;
    row.try_get("", "n").map_err(|error| error.to_string())
}
