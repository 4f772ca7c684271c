//! Writes `EXPIRED` on visits whose time ran out and records `visit.expired` for each. Reads never
//! wait for it ([`super::Deadlines`] already says they are expired); it is there so the stored
//! status and the event log catch up with the rule.
use sea_orm::{ActiveEnum, ConnectionTrait, FromQueryResult, Statement, TransactionTrait};

use super::{
    Deadlines,
    entities::{VisitStatus, visit},
};
use crate::{
    error::AppError,
    events::{self, NewEvent, catalogue::VisitExpired},
};

/// Taken for the length of one sweep, so one instance sweeps at a time (the others find it taken
/// and wait for their next turn).
const SWEEPER_LOCK_KEY: i64 = 0x686f_6d65_7377_6570;

/// Expires up to `batch` due visits, oldest first, in one transaction; returns how many (0 when
/// another instance is sweeping). Rows a transition holds are skipped, not waited for: that
/// transition re-checks the deadline under its lock, and the next sweep takes what is left.
pub async fn expire_due(
    db: &impl TransactionTrait<Transaction = sea_orm::DatabaseTransaction>,
    deadlines: &Deadlines,
    batch: u64,
) -> Result<usize, AppError> {
    const EXPIRE: &str = r#"
WITH due AS (
    SELECT id, status AS previous_status FROM visits
    WHERE status = ANY($1) AND date < $2
    ORDER BY date, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE visits SET status = $4, updated_at = now()
FROM due WHERE visits.id = due.id
RETURNING visits.*, due.previous_status"#;
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let sweeping = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT pg_try_advisory_xact_lock($1) AS sweeping",
            [SWEEPER_LOCK_KEY.into()],
        ))
        .await?
        .map(|row| row.try_get::<bool>("", "sweeping"))
        .transpose()?
        .unwrap_or(false);
    if !sweeping {
        return Ok(0);
    }
    let outstanding: Vec<sea_orm::Value> = VisitStatus::OUTSTANDING
        .iter()
        .map(|status| status.to_value().into())
        .collect();
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            EXPIRE,
            [
                crate::db::array(sea_orm::sea_query::ArrayType::String, outstanding),
                deadlines.expired_before.into(),
                i64::try_from(batch).unwrap_or(i64::MAX).into(),
                VisitStatus::Expired.to_value().into(),
            ],
        ))
        .await?;
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        let visit = visit::Model::from_query_result(row, "")?;
        let previous_status: String = row.try_get("", "previous_status")?;
        expired.push(NewEvent::of(&VisitExpired {
            visit: visit.state(),
            previous_status,
        })?);
    }
    let count = expired.len();
    events::record_all(&txn, expired).await?;
    txn.commit().await?;
    Ok(count)
}
