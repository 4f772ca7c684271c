//! Data at scale, written with `generate_series` in a few statements: `integration seed` and the
//! bench's `read-at-scale` workload. Members are the bench fixture's (same ids, emails and
//! password), created if missing, so a seeded database can be logged into and benched alike.
//!
//! The shape, for `visits` V over `users` U (the defaults: 1,000,000 over 10,000):
//! - dates spread evenly over the 365 days from 335 days ago to 29 days ahead;
//! - ahead (today on, about 8% of V): 4 in 5 REQUESTED (the open list: about 6.6% of V), 1 in 5
//!   ACCEPTED by the next member; 10 minutes each, so a member's outstanding minutes stay within
//!   the 120 every user starts with as long as V/U stays under about 140;
//! - the last two days (still in their grace days): REQUESTED;
//! - before that: 7 in 10 EXPIRED, 3 in 10 CANCELLED (no minutes moved, so the books balance);
//! - one task per visit.
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::bench::fixture::{PASSWORD, insert_members_sql, member_uuid_sql, run_in_order};

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: i64,
    pub visits: i64,
}

/// What seeding wrote and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub open: i64,
    pub took: Duration,
}

/// Replaces every visit (and the ledger, which only visits explain) with `shape.visits` of the
/// shape above; members are added up to `shape.users`. `password_hash` is an Argon2id hash of the
/// fixture's password, used for members created here.
pub async fn seed(
    db: &DatabaseConnection,
    shape: Shape,
    password_hash: &str,
) -> anyhow::Result<Seeded> {
    anyhow::ensure!(shape.users >= 2, "--users must be at least 2");
    anyhow::ensure!(shape.visits >= 0, "--visits must not be negative");
    let started = Instant::now();
    let (users, visits) = (shape.users, shape.visits);
    let member = member_uuid_sql;
    let statements = [
        insert_members_sql(users),
        format!(
            "INSERT INTO balances (user_id, minutes, starting_minutes) \
             SELECT {}, 120, 120 FROM generate_series(1, {users}) n ON CONFLICT DO NOTHING",
            member("n")
        ),
        "TRUNCATE visit_tasks, transactions, visits".to_string(),
        "UPDATE balances SET minutes = starting_minutes WHERE minutes <> starting_minutes"
            .to_string(),
        format!(
            "INSERT INTO visits (id, member_id, pal_id, date, minutes, status, created_at, updated_at) \
             SELECT ('40000000-0000-4000-8000-' || lpad(v::text, 12, '0'))::uuid, \
                    {member}, CASE WHEN status = 'ACCEPTED' THEN {pal} END, date, 10, status, now(), now() \
             FROM (SELECT v, date, \
                     CASE WHEN date >= today THEN CASE WHEN v % 5 = 0 THEN 'ACCEPTED' ELSE 'REQUESTED' END \
                          WHEN date >= today - 2 THEN 'REQUESTED' \
                          WHEN v % 10 < 7 THEN 'EXPIRED' ELSE 'CANCELLED' END AS status \
                   FROM (SELECT v, today - 335 + ((v * 7) % 365)::int AS date, today \
                         FROM generate_series(1, {visits}) v, \
                              (SELECT (now() AT TIME ZONE 'UTC')::date AS today) clock) dated) shaped",
            member = member(&format!("1 + v % {users}")),
            pal = member(&format!("1 + (v + 1) % {users}")),
        ),
        // Before the tasks: each task's foreign-key check looks its visit up, and planned against
        // the statistics of the table just emptied it would scan the whole table for each one.
        "ANALYZE visits".to_string(),
        "INSERT INTO visit_tasks (visit_id, position, name) SELECT id, 0, 'Company' FROM visits"
            .to_string(),
        // Index-only scans (the counts) need the visibility map a VACUUM writes.
        "VACUUM ANALYZE users, balances, visits, visit_tasks".to_string(),
    ];
    run_in_order(db, &statements, password_hash, "seed").await?;
    let open = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS open FROM visits \
             WHERE status = 'REQUESTED' AND date >= (now() AT TIME ZONE 'UTC')::date",
        ))
        .await?
        .context("no count")?
        .try_get::<i64>("", "open")?;
    Ok(Seeded {
        open,
        took: started.elapsed(),
    })
}

/// An Argon2id hash of the fixture's password, computed here (once per seeding).
pub fn password_hash() -> anyhow::Result<String> {
    use argon2::{Argon2, password_hash::PasswordHasher};
    Ok(Argon2::default()
        .hash_password(PASSWORD.as_bytes())
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .to_string())
}
