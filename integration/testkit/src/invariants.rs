//! The four invariants of the books, read from PostgreSQL in one statement, hence one snapshot.
use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// What both the counts and the rows are judged by (one definition, so they cannot disagree).
macro_rules! books {
    () => {
        r#"
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
)"#
    };
}

const CHECK: &str = concat!(
    books!(),
    r#"
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
"#
);

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
    /// Each invariant's name, in the order of [`Violations::counts`] (and of the offenders' kinds).
    pub const NAMES: [&'static str; 6] = [
        "negative balance",
        "over-committed member",
        "conservation gap",
        "visit paid twice",
        "completed/paid mismatch",
        "unexplained balance",
    ];

    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }

    /// Every invariant by name with its count, for reports.
    pub fn counts(&self) -> [(&'static str, i64); 6] {
        let [negative, overcommitted, gap, twice, mismatch, unexplained] = Self::NAMES;
        [
            (negative, self.negative_balances),
            (overcommitted, self.overcommitted_members),
            (gap, self.conservation_gap),
            (twice, self.visits_paid_twice),
            (mismatch, self.completion_mismatches),
            (unexplained, self.unexplained_balances),
        ]
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

/// One row that breaks an invariant: what it is, and what the books say against what they should.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offender {
    pub invariant: &'static str,
    /// `member <uuid>`, `visit <uuid>`, or `books` for the whole-ledger sum.
    pub row: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Offender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} expected {}, found {}",
            self.invariant, self.row, self.expected, self.found
        )
    }
}

/// Shown per invariant: enough to start looking, few enough to read.
pub const OFFENDERS_SHOWN: i64 = 10;

/// The rows behind each broken count (up to [`OFFENDERS_SHOWN`] per invariant), read in one
/// statement like [`check`].
pub async fn offenders(db: &DatabaseConnection) -> anyhow::Result<Vec<Offender>> {
    const OFFENDERS: &str = concat!(
        books!(),
        r#", found AS (
    (SELECT 1 AS kind, 'member ' || user_id AS row, '>= 0' AS expected,
            'balance ' || minutes AS found
     FROM balances WHERE minutes < 0 ORDER BY user_id LIMIT $2)
    UNION ALL
    (SELECT 2, 'member ' || b.user_id, 'outstanding <= balance ' || b.minutes,
            'outstanding ' || o.minutes
     FROM balances b JOIN outstanding o ON o.member_id = b.user_id
     WHERE o.minutes > b.minutes ORDER BY b.user_id LIMIT $2)
    UNION ALL
    (SELECT 3, 'books', 'balances + fees = grants ' || grants, 'balances + fees ' || held
     FROM (SELECT (SELECT COALESCE(SUM(minutes), 0) FROM balances)
                  + (SELECT COALESCE(SUM(fee), 0) FROM transactions) AS held,
                  (SELECT COALESCE(SUM(starting_minutes), 0) FROM balances) AS grants) sums
     WHERE held <> grants)
    UNION ALL
    (SELECT 4, 'visit ' || visit_id, '1 transaction', count(*) || ' transactions'
     FROM transactions GROUP BY visit_id HAVING count(*) > 1 ORDER BY visit_id LIMIT $2)
    UNION ALL
    (SELECT 5, 'visit ' || v.id,
            CASE WHEN v.status = 'COMPLETED' THEN 'a transaction' ELSE 'no transaction' END,
            v.status || CASE WHEN v.status = 'COMPLETED' THEN ' without' ELSE ' with' END
                || ' a transaction'
     FROM visits v
     WHERE (v.status = 'COMPLETED') <> EXISTS (SELECT 1 FROM transactions t WHERE t.visit_id = v.id)
     ORDER BY v.id LIMIT $2)
    UNION ALL
    (SELECT 6, 'member ' || b.user_id,
            'balance ' || (b.starting_minutes - COALESCE(d.minutes, 0) + COALESCE(c.minutes, 0))
                || ' (grant - debits + credits)',
            'balance ' || b.minutes
     FROM balances b
     LEFT JOIN debits d ON d.user_id = b.user_id LEFT JOIN credits c ON c.user_id = b.user_id
     WHERE b.minutes <> b.starting_minutes - COALESCE(d.minutes, 0) + COALESCE(c.minutes, 0)
     ORDER BY b.user_id LIMIT $2)
)
SELECT kind, row, expected, found FROM found ORDER BY kind, row
"#
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            OFFENDERS,
            [GRACE_DAYS.into(), OFFENDERS_SHOWN.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let kind: i32 = row.try_get("", "kind")?;
            Ok(Offender {
                invariant: usize::try_from(kind - 1)
                    .ok()
                    .and_then(|index| Violations::NAMES.get(index))
                    .copied()
                    .unwrap_or("unknown"),
                row: row.try_get("", "row")?,
                expected: row.try_get("", "expected")?,
                found: row.try_get("", "found")?,
            })
        })
        .collect()
}
