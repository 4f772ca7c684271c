//! The connection pool, its per-session safety settings, and migrations.
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseTransaction, DbErr, TransactionTrait};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::{Config, PoolMode},
    error::{AppError, is_lost_connection},
    metrics::Metrics,
};

mod database;
pub mod replica;
pub use database::Database;

/// How long a pooled connection may sit idle and still be handed out without a ping first.
const CONNECTION_ALIVE_WITHOUT_PING: Duration = Duration::from_millis(500);

/// Any fixed number works; it only has to be the same for every instance migrating this database.
const MIGRATION_LOCK_KEY: i64 = 0x686f_6d65_7669_7369;

/// Opens the request pool on `url`. Every transaction carries timeouts so a stuck lock or a
/// forgotten transaction surfaces as an error instead of a hang.
pub async fn connect_to(url: &SecretString, config: &Config) -> anyhow::Result<Database> {
    connect_sized(
        url,
        config,
        config.database.pool_size.get(),
        APPLICATION_NAME,
    )
    .await
}

/// What the request pool's sessions are called in `pg_stat_activity`; a background task's own
/// connection adds its purpose (`home-visits live feed`), so operators (and the bench, which
/// splits PostgreSQL's CPU by it) can tell who does what.
pub const APPLICATION_NAME: &str = "home-visits";

/// [`connect_to`] with a pool of `size` connections named `application_name`: background readers get small pools of their
/// own, so under load they do not queue behind requests for the request pool (they did: the live
/// feed's p99 and the consumer's lag were mostly that wait).
pub async fn connect_sized(
    url: &SecretString,
    config: &Config,
    size: u32,
    application_name: &str,
) -> anyhow::Result<Database> {
    let mode = config.database.pool_mode;
    connect_in_mode(url, config, size, application_name, mode, false).await
}

/// A small pool on `DATABASE_DIRECT_URL` (sessions of its own, whatever `DATABASE_POOL_MODE`
/// says of `DATABASE_URL`), or the request pool when no direct URL is set.
pub async fn connect_direct(
    config: &Config,
    request_pool: &Database,
    purpose: &str,
) -> anyhow::Result<Database> {
    let Some(url) = &config.database.direct_url else {
        return Ok(request_pool.clone());
    };
    let name = format!("{APPLICATION_NAME} {purpose}");
    connect_in_mode(url, config, 1, &name, PoolMode::Direct, false)
        .await
        .context("cannot connect to DATABASE_DIRECT_URL")
}

/// A pool of `size` on the replica of `DATABASE_READ_URL`, with the watch that says when it may
/// be read; `None` without one. Connections are made as needed, so a replica that is down at start
/// costs reads on the primary, not the start; one that answers but is no standby is refused.
pub async fn connect_replica(
    config: &Config,
    size: u32,
    purpose: &str,
    watch: Option<&std::sync::Arc<replica::ReplicaWatch>>,
) -> anyhow::Result<Option<(Database, std::sync::Arc<replica::ReplicaWatch>)>> {
    let Some(url) = &config.database.read_url else {
        return Ok(None);
    };
    let name = format!("{APPLICATION_NAME} {purpose}");
    let pool = connect_in_mode(url, config, size, &name, PoolMode::Direct, true)
        .await
        .context("DATABASE_READ_URL is not a PostgreSQL URL")?;
    let watch = match watch {
        Some(watch) => watch.clone(),
        None => {
            if replica::is_standby(&pool).await == Some(false) {
                anyhow::bail!(
                    "DATABASE_READ_URL answers, but not as a standby (pg_is_in_recovery() is \
                     false): reads there would not follow the primary"
                );
            }
            replica::ReplicaWatch::new(config.database.read_max_lag)
        }
    };
    Ok(Some((pool, watch)))
}

async fn connect_in_mode(
    url: &SecretString,
    config: &Config,
    size: u32,
    application_name: &str,
    mode: PoolMode,
    lazy: bool,
) -> anyhow::Result<Database> {
    let application_name = application_name.to_owned();
    let timeouts = [
        ("lock_timeout", millis(config.database.lock_timeout)),
        (
            "statement_timeout",
            millis(config.database.statement_timeout),
        ),
        (
            "idle_in_transaction_session_timeout",
            millis(config.database.idle_in_transaction_timeout),
        ),
    ];
    let mut options = ConnectOptions::new(url.expose_secret());
    options
        .max_connections(size)
        .min_connections(u32::from(!lazy))
        .connect_lazy(lazy)
        // Both bounded so that during a database outage each call fails fast and retryably instead
        // of queueing for seconds.
        .connect_timeout(config.database.acquire_timeout)
        .acquire_timeout(config.database.acquire_timeout)
        // sqlx pings every connection it hands out by default: one more round trip (and a park and
        // wake on both sides) per transaction. A connection in steady use is known alive; only one
        // idle long enough to have been dropped by the server or a proxy is worth the ping (the
        // same trade as HikariCP's 500 ms alive-bypass window). A connection that dies while hot
        // fails its one request with a retryable INTERNAL error and is not reused.
        .test_before_acquire_if_idle_for(CONNECTION_ALIVE_WITHOUT_PING)
        .sqlx_logging(false)
        // Every acquire reported, where only the pool-wait metric listens (see `telemetry`).
        .map_sqlx_postgres_pool_opts(|options| options.acquire_time_level(log::LevelFilter::Info));
    let connection = match mode {
        PoolMode::Direct => {
            options.map_sqlx_postgres_opts(move |options| {
                options
                    .options(timeouts.clone())
                    .application_name(&application_name)
            });
            sea_orm::Database::connect(options)
                .await
                .map(Database::direct)
        }
        PoolMode::Transaction => {
            // A pooler refuses start-up parameters it does not know (or, told to ignore them,
            // drops them silently): send none but the name, and set the timeouts per transaction.
            // No statement cache either: a statement prepared on one server connection is
            // unknown on the next.
            options.map_sqlx_postgres_opts(move |options| {
                options
                    .extra_float_digits(None)
                    .statement_cache_capacity(0)
                    .application_name(&application_name)
            });
            let preamble = transaction_preamble(&timeouts);
            sea_orm::Database::connect(options)
                .await
                .map(|connection| Database::behind_transaction_pooler(connection, preamble))
        }
    };
    connection.context("cannot connect to PostgreSQL (check DATABASE_URL)")
}

/// One simple query, so it costs one round trip: the session's timeouts for this transaction
/// alone, and `DEALLOCATE ALL` for the statements sqlx names (`sqlx_s_1`, ...) and never closes
/// when it caches none. Without it, a name another client left on this server connection
/// collides with ours.
fn transaction_preamble(timeouts: &[(&str, String)]) -> String {
    let mut preamble: String = timeouts
        .iter()
        .map(|(name, value)| format!("SET LOCAL {name} = '{value}'; "))
        .collect();
    preamble.push_str("DEALLOCATE ALL");
    preamble
}

/// Behind a transaction pooler, runs one transaction through it at start, so a pooler that
/// cannot hold one (PgBouncer's statement mode) is refused now rather than failing every call.
pub async fn check_transaction_pooler(db: &Database) -> anyhow::Result<()> {
    if !db.is_behind_transaction_pooler() {
        return Ok(());
    }
    let attempt = async {
        let transaction = db.begin().await?;
        transaction.execute_unprepared("SELECT 1").await?;
        transaction.commit().await
    };
    attempt.await.map_err(|error| {
        anyhow::anyhow!(
            "DATABASE_POOL_MODE=transaction, but a transaction through DATABASE_URL failed (a \
             pooler in statement mode cannot hold one; use pool_mode = transaction): {error}"
        )
    })
}

/// Applies pending migrations over `DATABASE_DIRECT_URL` when set (a transaction pooler in front
/// of `DATABASE_URL` is not where schema changes belong), else over `db`.
pub async fn migrate_for(config: &Config, db: &Database) -> anyhow::Result<()> {
    let session = connect_direct(config, db, "migrations").await?;
    migrate(&session).await.context("migrations failed")?;
    if config.database.direct_url.is_some() {
        session.close().await?;
    }
    Ok(())
}

/// Applies pending migrations. The advisory lock lets several instances start at once: the first
/// migrates, the others wait and then find nothing left to do.
pub async fn migrate(db: &Database) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Starts a transaction. A pooled connection can die while it sits idle (a database restart,
/// `pg_terminate_backend`); one idle for less than [`CONNECTION_ALIVE_WITHOUT_PING`] is handed out
/// unchecked, and its `BEGIN` is the first to find out. Nothing ran, so the next connection is
/// tried, at most as many times as the pool holds connections (they may all be dead); sqlx
/// discards each broken one.
pub async fn begin(db: &Database, metrics: &Metrics) -> Result<DatabaseTransaction, DbErr> {
    let connections = db.pool().options().get_max_connections();
    let mut tries = 0;
    loop {
        match db.begin().await {
            Err(error) if is_lost_connection(&error) && tries < connections => {
                tries += 1;
                metrics.transaction_retry("connection_lost");
                tracing::debug!(%error, "a pooled connection was dead at BEGIN; trying another");
            }
            outcome => return outcome,
        }
    }
}

/// How many times [`retrying`] runs a transaction that PostgreSQL keeps rolling back.
const ATTEMPTS: u32 = 3;

/// Runs `transaction` (which begins, works and commits) and, when PostgreSQL rolled it back for a
/// deadlock or a serialization failure (see [`crate::error::Contention::worth_running_again`]),
/// runs it again after a short random pause, so the two colliders do not meet again in step, up
/// to [`ATTEMPTS`] times in all; the client sees the retryable `CONFLICT` only if every attempt
/// failed. It must do nothing outside its transaction, since it may run more than once. Every
/// attempt stopped for contention is counted, retried or not.
pub async fn retrying<T, Attempt>(
    metrics: &Metrics,
    mut transaction: impl FnMut() -> Attempt,
) -> Result<T, AppError>
where
    Attempt: Future<Output = Result<T, AppError>>,
{
    let mut attempt = 1;
    loop {
        let outcome = transaction().await;
        if let Err(AppError::Contention(contention)) = &outcome {
            metrics.contention(contention.as_str());
        }
        match outcome {
            Err(AppError::Contention(contention))
                if contention.worth_running_again() && attempt < ATTEMPTS =>
            {
                metrics.transaction_retry(contention.as_str());
                let pause = rand::random_range(1..=10 * u64::from(attempt));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A list bound as one PostgreSQL array parameter (`$n::text[]`, `$n::int4[]`, ...), so a
/// statement's text is the same whatever the list's length. Every item must be of the array's
/// type and none may be NULL: sea-query's binding panics otherwise.
pub fn array(ty: sea_orm::sea_query::ArrayType, items: Vec<sea_orm::Value>) -> sea_orm::Value {
    sea_orm::Value::Array(ty, Some(Box::new(items)))
}

/// Replaces the database name (the URL path) of a PostgreSQL URL.
pub fn with_database(url: &SecretString, database: &str) -> SecretString {
    let url = url.expose_secret();
    let (without_query, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_end = without_query
        .find("://")
        .map_or(0, |scheme_end| scheme_end + 3);
    let base = match without_query[authority_end..].find('/') {
        Some(slash) => &without_query[..authority_end + slash],
        None => without_query,
    };
    let mut result = format!("{base}/{database}");
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    SecretString::from(result)
}

/// Creates `database` on the server of `admin_url` unless it exists.
pub async fn create_database_if_missing(
    admin_url: &SecretString,
    database: &str,
) -> anyhow::Result<()> {
    let admin = sea_orm::Database::connect(admin_url.expose_secret()).await?;
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [database.into()],
        ))
        .await?
        .is_some();
    if !exists {
        match admin
            .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
            .await
        {
            // 42P04 duplicate_database: another process created it between our check and now.
            Err(error) if crate::error::sqlstate(&error).is_none_or(|code| code != "42P04") => {
                return Err(error.into());
            }
            _ => {}
        }
    }
    admin.close().await?;
    Ok(())
}
