//! The outbox is the event log and is kept by default, so a new consumer can replay it from the
//! start. With `OUTBOX_RETENTION_DAYS` set, older events are deleted, but never one the relay
//! (when there is one) has not published yet, nor, without a relay, one a consumer reading the log
//! has not handled yet: with `CONSUMERS` the instances that prune may not be those that consume.
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, Statement};

use super::{consumers, relay};

/// Rows deleted per statement, so pruning a large backlog never holds long locks.
const BATCH: i64 = 10_000;

/// Deletes events older than `keep`; returns how many went.
pub async fn prune(
    conn: &impl ConnectionTrait,
    keep: Duration,
    relay_enabled: bool,
) -> Result<u64, DbErr> {
    // With a relay the consumers read the stream, which keeps its own retention; without one they
    // read this log, each from its checkpoint (a consumer is covered once it has checkpointed).
    let read_by_all = if relay_enabled {
        format!(
            "AND (txid, position) <= (SELECT txid, position FROM event_checkpoints WHERE name = '{}')",
            relay::CHECKPOINT
        )
    } else {
        format!(
            "AND NOT EXISTS (SELECT 1 FROM event_checkpoints reader \
               WHERE reader.name LIKE '{}%' AND (outbox.txid, outbox.position) > (reader.txid, reader.position))",
            consumers::CHECKPOINT_PREFIX
        )
    };
    // Each aggregate's newest event stays, whatever its age: the next event's version is counted
    // from it.
    let sql = format!(
        "DELETE FROM outbox WHERE position IN (\
           SELECT position FROM outbox \
           WHERE occurred_at < now() - make_interval(secs => $1) {read_by_all} \
             AND EXISTS (SELECT 1 FROM outbox newer WHERE newer.aggregate_type = outbox.aggregate_type \
                         AND newer.aggregate_id = outbox.aggregate_id \
                         AND newer.aggregate_version > outbox.aggregate_version) \
           ORDER BY position LIMIT $2)"
    );
    let mut deleted = 0;
    loop {
        let result = conn
            .execute_raw(Statement::from_sql_and_values(
                conn.get_database_backend(),
                &sql,
                [keep.as_secs_f64().into(), BATCH.into()],
            ))
            .await?;
        deleted += result.rows_affected();
        if result.rows_affected() < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
