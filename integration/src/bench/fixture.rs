//! The bench's data: 10,000 members with sessions and balances and pre-booked visits, written with
//! SQL, and access tokens minted for them with the instances' shared secret.
use anyhow::Context;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;

use crate::client::Client;

/// Members are numbered 1..=MEMBERS; 1 is the hot requester, 2 the hot member whose visits are completed.
pub const MEMBERS: i64 = 10_000;
pub const PASSWORD: &str = "bench password 1";
/// Visits to pre-book per second of run, so neither pgbench nor the service runs out.
pub const RANDOM_VISITS_PER_SECOND: u64 = 9_000;
pub const HOT_VISITS_PER_SECOND: u64 = 4_000;

pub fn member_id(n: i64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// SQL for the id numbered `expr` (an integer expression) under `prefix`, as [`member_id`] and
/// its siblings spell them.
fn uuid_sql(prefix: &str, expr: &str) -> String {
    format!("('{prefix}-0000-4000-8000-' || lpad(({expr})::text, 12, '0'))::uuid")
}

/// SQL for member `expr`'s id, as [`member_id`] spells it.
pub fn member_uuid_sql(expr: &str) -> String {
    uuid_sql("00000000", expr)
}

pub fn session_id(n: i64) -> String {
    format!("10000000-0000-4000-8000-{n:012}")
}

pub fn random_visit_id(v: u64) -> String {
    format!("20000000-0000-4000-8000-{v:012}")
}

pub fn hot_visit_id(v: u64) -> String {
    format!("30000000-0000-4000-8000-{v:012}")
}

/// The member of random visit `v`, and the pal who completes it (as in `pgbench/complete.sql`).
pub fn random_visit_parties(v: u64) -> (i64, i64) {
    let v = i64::try_from(v).unwrap_or(0);
    (3 + v % (MEMBERS - 2), 3 + (v + 1) % (MEMBERS - 2))
}

/// A member other than the two hot ones, the same for a given client and iteration.
pub fn random_member(client: usize, iteration: u64) -> i64 {
    StdRng::seed_from_u64((client as u64) << 32 | iteration).random_range(3..=MEMBERS)
}

/// Users, sessions, balances and pre-booked visits, written with SQL: registering 10,000 users
/// through the API would spend minutes in Argon2 before measuring anything.
pub async fn load_fixture(
    db: &DatabaseConnection,
    password_hash: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let random_visits = seconds * RANDOM_VISITS_PER_SECOND;
    let hot_visits = seconds * HOT_VISITS_PER_SECOND;
    let uuid = |prefix: &str, expr: &str| uuid_sql(prefix, expr);
    let member = member_uuid_sql;
    let statements = [
        insert_members_sql(MEMBERS),
        // Realistic balances: the hot requester can book for the whole run without being refused,
        // the hot member can pay for every pre-booked visit, everyone else has 1,000 minutes.
        format!(
            "INSERT INTO balances (user_id, minutes, starting_minutes) \
             SELECT {}, m, m FROM (SELECT n, CASE n WHEN 1 THEN {} WHEN 2 THEN {} ELSE 1000 END AS m \
             FROM generate_series(1, {MEMBERS}) n) grants",
            member("n"),
            seconds * 5_000,
            hot_visits * 10
        ),
        format!(
            "INSERT INTO sessions (id, user_id, expires_at) \
             SELECT {}, {}, now() + interval '1 day' FROM generate_series(1, {MEMBERS}) n",
            uuid("10000000", "n"),
            member("n")
        ),
        format!(
            "INSERT INTO visits (id, member_id, date, minutes, status) \
             SELECT {}, {}, current_date + 1, 10, 'REQUESTED' FROM generate_series(1, {random_visits}) v",
            uuid("20000000", "v"),
            member(&format!("3 + v % {}", MEMBERS - 2))
        ),
        format!(
            "INSERT INTO visits (id, member_id, date, minutes, status) \
             SELECT {}, {}, current_date + 1, 10, 'REQUESTED' FROM generate_series(1, {hot_visits}) v",
            uuid("30000000", "v"),
            member("2")
        ),
        "INSERT INTO visit_tasks (visit_id, position, name) SELECT id, 0, 'Company' FROM visits"
            .to_string(),
        // The event log a running deployment has: its members' registrations and the requests
        // of the visits booked. Without it, its statistics say the outbox is empty, and the plans
        // that readers of the log cache at first stay the ones for an empty table.
        format!(
            "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
             SELECT gen_random_uuid(), 'user.registered', 1, 'user', {0}, 1, jsonb_build_object('userId', {0}) \
             FROM generate_series(1, {MEMBERS}) n",
            member("n")
        ),
        "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
         SELECT gen_random_uuid(), 'visit.requested', 1, 'visit', id, 1, jsonb_build_object(\
           'visitId', id, 'memberId', member_id, 'palId', NULL, 'date', date::text, 'minutes', minutes, \
           'status', 'REQUESTED', 'taskCount', 1) FROM visits"
            .to_string(),
        "ANALYZE".to_string(),
    ];
    run_in_order(db, &statements, password_hash, "fixture").await
}

/// Members `1..=count` as [`member_id`] numbers them, each with the password `password_hash`
/// hashes (bound as `$1`); those already there are kept.
pub fn insert_members_sql(count: i64) -> String {
    format!(
        "INSERT INTO users (id, email, password_hash, first_name, last_name) \
         SELECT {}, 'bench-' || n || '@bench.test', $1, 'Bench', 'Member ' || n \
         FROM generate_series(1, {count}) n ON CONFLICT DO NOTHING",
        member_uuid_sql("n")
    )
}

/// Runs `statements` one after another; the first gets `password_hash` as `$1`. `what` names the
/// step in an error.
pub async fn run_in_order(
    db: &DatabaseConnection,
    statements: &[String],
    password_hash: &str,
    what: &str,
) -> anyhow::Result<()> {
    for (index, sql) in statements.iter().enumerate() {
        let statement = if index == 0 {
            Statement::from_sql_and_values(db.get_database_backend(), sql, [password_hash.into()])
        } else {
            Statement::from_string(db.get_database_backend(), sql)
        };
        db.execute_raw(statement)
            .await
            .with_context(|| format!("{what}: {sql}"))?;
    }
    Ok(())
}

/// How long the fixture's tokens live (the instances are told to issue tokens as long).
pub const TOKEN_SECONDS: i64 = 3600;

/// Access tokens the instances accept, minted with their shared secret for the fixture's sessions.
pub fn mint_tokens(secret: &str) -> anyhow::Result<Vec<String>> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let now = chrono::Utc::now().timestamp();
    (0..=MEMBERS)
        .map(|n| {
            let claims = json!({ "sub": member_id(n), "sid": session_id(n), "iat": now, "exp": now + TOKEN_SECONDS,
                                 "iss": "home-visits", "aud": "home-visits" });
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).context("minting a token")
        })
        .collect()
}

/// Deletes the hot requester's bookings (their tasks go with them).
pub async fn forget_hot_requests(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "DELETE FROM visits WHERE member_id = $1::uuid",
        [member_id(1).into()],
    ))
    .await
    .context("forgetting the hot requester's bookings")?;
    Ok(())
}

/// What the workloads drive: a client per instance and a token per fixture member.
pub struct Fixture {
    pub clients: Vec<Client>,
    pub tokens: Vec<String>,
}

impl Fixture {
    pub fn client(&self, index: usize) -> &Client {
        &self.clients[index % self.clients.len()]
    }
}
