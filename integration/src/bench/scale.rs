//! The `read-at-scale` workload: pages of visits at 10,000 and at 1,000,000 visits (the shape of
//! [`crate::seed`]), first and deep pages, with and without `totalCount`. Latency of one client
//! calling in a row: what a page costs, not how many an instance serves.
use std::{fmt::Write, time::Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;

use super::{fixture::Fixture, stats::Measurement};
use crate::seed::{self, Shape};

pub const SCALES: [i64; 2] = [10_000, 1_000_000];
const CALLS: usize = 200;
const WARM_UP: usize = 20;

#[derive(Clone, Copy)]
enum List {
    Open,
    Member,
}

struct Case {
    list: List,
    deep: bool,
    count: bool,
}

const CASES: [Case; 6] = [
    Case {
        list: List::Open,
        deep: false,
        count: false,
    },
    Case {
        list: List::Open,
        deep: false,
        count: true,
    },
    Case {
        list: List::Open,
        deep: true,
        count: false,
    },
    Case {
        list: List::Open,
        deep: true,
        count: true,
    },
    Case {
        list: List::Member,
        deep: false,
        count: false,
    },
    Case {
        list: List::Member,
        deep: false,
        count: true,
    },
];

impl Case {
    fn label(&self) -> String {
        format!(
            "{} {} page{}",
            match self.list {
                List::Open => "OPEN",
                List::Member => "MEMBER",
            },
            if self.deep { "deep" } else { "first" },
            if self.count { " + totalCount" } else { "" }
        )
    }
}

/// The member whose view is measured (one of the 100 members who hold visits at either scale).
const VIEWER: usize = 3;

/// Seeds each scale in turn (replacing the visits earlier workloads used, so it runs last) and
/// prints a table. Returns the lines for the report.
pub async fn run(
    db: &DatabaseConnection,
    fixture: &Fixture,
    password_hash: &str,
) -> anyhow::Result<Vec<String>> {
    let mut table: Vec<(i64, String, Measurement)> = Vec::new();
    let mut lines = Vec::new();
    for visits in SCALES {
        // A hundred visits per member at both scales, so a member's page is the same page and
        // only the table (and the open list) grows a hundredfold.
        let seeded = seed::seed(
            db,
            Shape {
                users: (visits / 100).clamp(2, super::fixture::MEMBERS),
                visits,
            },
            password_hash,
        )
        .await?;
        lines.push(format!(
            "  seeded {visits} visits ({} open) in {:.1} s",
            seeded.open,
            seeded.took.as_secs_f64()
        ));
        let deep_cursor = deep_open_cursor(db).await?;
        for case in &CASES {
            let measured = measure(fixture, case, deep_cursor.as_deref()).await;
            table.push((visits, case.label(), measured));
        }
    }
    lines.push(format!(
        "  {:<30} {:>12} {:>12} {:>12} {:>12} {:>8}  errors",
        "read-at-scale (1 client)", "10k p50 ms", "10k p99 ms", "1M p50 ms", "1M p99 ms", "1M/10k"
    ));
    for case in &CASES {
        let label = case.label();
        let at = |scale: i64| {
            table
                .iter()
                .find(|(visits, name, _)| *visits == scale && *name == label)
                .map(|(_, _, measured)| measured)
        };
        let (Some(small), Some(large)) = (at(SCALES[0]), at(SCALES[1])) else {
            continue;
        };
        let ms = |measured: &Measurement, q: f64| measured.percentile(q).as_secs_f64() * 1e3;
        let mut errors = String::new();
        for (code, count) in small.errors.iter().chain(large.errors.iter()) {
            let _ = write!(errors, "{code}:{count} ");
        }
        lines.push(format!(
            "  {:<30} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>7.2}x  {}",
            label,
            ms(small, 0.5),
            ms(small, 0.99),
            ms(large, 0.5),
            ms(large, 0.99),
            ms(large, 0.5) / ms(small, 0.5).max(f64::EPSILON),
            if errors.is_empty() {
                "-"
            } else {
                errors.trim_end()
            }
        ));
    }
    Ok(lines)
}

async fn measure(fixture: &Fixture, case: &Case, deep_cursor: Option<&str>) -> Measurement {
    let filter = match case.list {
        List::Open => json!({ "role": "OPEN" }),
        List::Member => json!({ "role": "MEMBER" }),
    };
    let after = if case.deep { deep_cursor } else { None };
    let query = format!(
        "query($filter: VisitFilter, $after: String) {{ visits(filter: $filter, first: 20, after: $after) {{
            {} edges {{ cursor node {{ id date minutes status }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        if case.count { "totalCount" } else { "" }
    );
    let token = fixture.tokens[VIEWER].as_str();
    let client = fixture.client(0);
    let variables = json!({ "filter": filter, "after": after });
    let mut measured = Measurement::default();
    for call in 0..WARM_UP + CALLS {
        let sent = Instant::now();
        let outcome = client.execute(Some(token), &query, variables.clone()).await;
        if call < WARM_UP {
            continue;
        }
        match outcome {
            Ok(_) => measured.record(sent.elapsed()),
            Err(failure) => measured.record_error(failure.label()),
        }
    }
    measured
}

/// A cursor nine tenths of the way down the open list. It is written here the way the API writes
/// its cursors (`api::pagination::encode_cursor` for the OPEN filter); were the two to drift, the
/// API would refuse it and the table would show the errors.
async fn deep_open_cursor(db: &DatabaseConnection) -> anyhow::Result<Option<String>> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "WITH open AS (SELECT date, id FROM visits \
                 WHERE status = 'REQUESTED' AND date >= (now() AT TIME ZONE 'UTC')::date) \
             SELECT date::text AS date, id::text AS id FROM open ORDER BY date, id \
             OFFSET (SELECT count(*) * 9 / 10 FROM open) LIMIT 1",
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let date: String = row.try_get("", "date")?;
    let id: String = row.try_get("", "id")?;
    Ok(Some(
        URL_SAFE_NO_PAD.encode(format!("visits:open:any|{date}|{id}")),
    ))
}
