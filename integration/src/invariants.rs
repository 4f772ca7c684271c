//! The four invariants of the books, read from PostgreSQL in one statement, hence one snapshot.
use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

const CHECK: &str = r#"
WITH outstanding AS (
    SELECT member_id, SUM(minutes) AS minutes FROM visits
    -- Expired visits hold no minutes, swept or not: $1 is the service's COMPLETION_GRACE_DAYS.
    WHERE status IN ('REQUESTED', 'ACCEPTED')
      AND date >= (now() AT TIME ZONE 'UTC')::date - $1::int
    GROUP BY member_id
), debits AS (
    SELECT member_id AS user_id, SUM(minutes) AS minutes FROM transactions GROUP BY member_id
), credits AS (
    SELECT pal_id AS user_id, SUM(pal_credit) AS minutes FROM transactions GROUP BY pal_id
)
SELECT
    (SELECT count(*) FROM balances WHERE minutes < 0) AS negative_balances,
    (SELECT count(*) FROM balances b JOIN outstanding o ON o.member_id = b.user_id
        WHERE o.minutes > b.minutes) AS overcommitted_members,
    ((SELECT COALESCE(SUM(minutes), 0) FROM balances) + (SELECT COALESCE(SUM(fee), 0) FROM transactions)
        - (SELECT COALESCE(SUM(starting_minutes), 0) FROM balances))::bigint AS conservation_gap,
    (SELECT count(*) FROM (SELECT visit_id FROM transactions GROUP BY visit_id HAVING count(*) > 1) paid_twice)
        AS visits_paid_twice,
    (SELECT count(*) FROM visits v WHERE (v.status = 'COMPLETED')
        <> EXISTS (SELECT 1 FROM transactions t WHERE t.visit_id = v.id)) AS completion_mismatches,
    (SELECT count(*) FROM balances b
        LEFT JOIN debits d ON d.user_id = b.user_id LEFT JOIN credits c ON c.user_id = b.user_id
        WHERE b.minutes <> b.starting_minutes - COALESCE(d.minutes, 0) + COALESCE(c.minutes, 0))
        AS unexplained_balances
"#;

/// Counts of rows breaking each invariant; all zero when the books are sound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Violations {
    /// Invariant 1: balances below zero.
    pub negative_balances: i64,
    /// Invariant 1: members whose requested and accepted visits (not expired) exceed their balance.
    pub overcommitted_members: i64,
    /// Invariant 2: sum of balances + sum of fees - sum of starting grants.
    pub conservation_gap: i64,
    /// Invariant 3: visits with more than one transaction.
    pub visits_paid_twice: i64,
    /// Invariant 3: visits COMPLETED without a transaction, or with one but not COMPLETED.
    pub completion_mismatches: i64,
    /// Invariant 4: balances that their grant and transactions do not explain.
    pub unexplained_balances: i64,
}

impl Violations {
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "all four invariants hold");
        }
        let parts = [
            ("negative balances", self.negative_balances),
            ("over-committed members", self.overcommitted_members),
            ("conservation gap (minutes)", self.conservation_gap),
            ("visits paid twice", self.visits_paid_twice),
            ("completed/paid mismatches", self.completion_mismatches),
            ("unexplained balances", self.unexplained_balances),
        ];
        let broken: Vec<String> = parts
            .iter()
            .filter(|(_, count)| *count != 0)
            .map(|(name, count)| format!("{name}: {count}"))
            .collect();
        write!(f, "{}", broken.join(", "))
    }
}

/// The service's default `COMPLETION_GRACE_DAYS`, which the harness runs it with.
pub const GRACE_DAYS: i32 = 2;

pub async fn check(db: &DatabaseConnection) -> anyhow::Result<Violations> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            CHECK,
            [GRACE_DAYS.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the invariant query returned no row"))?;
    let get = |column: &str| row.try_get::<i64>("", column);
    Ok(Violations {
        negative_balances: get("negative_balances")?,
        overcommitted_members: get("overcommitted_members")?,
        conservation_gap: get("conservation_gap")?,
        visits_paid_twice: get("visits_paid_twice")?,
        completion_mismatches: get("completion_mismatches")?,
        unexplained_balances: get("unexplained_balances")?,
    })
}
