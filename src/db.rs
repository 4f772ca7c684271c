//! The connection pool, its per-session safety settings, and migrations.
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::Config,
    error::{AppError, is_lost_connection},
    metrics::Metrics,
};

/// How long a pooled connection may sit idle and still be handed out without a ping first.
const CONNECTION_ALIVE_WITHOUT_PING: Duration = Duration::from_millis(500);

/// Any fixed number works; it only has to be the same for every instance migrating this database.
const MIGRATION_LOCK_KEY: i64 = 0x686f_6d65_7669_7369;

/// Opens the pool. Every connection carries timeouts so a stuck lock or a forgotten transaction
/// surfaces as an error instead of a hang.
pub async fn connect_to(url: &SecretString, config: &Config) -> anyhow::Result<DatabaseConnection> {
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
) -> anyhow::Result<DatabaseConnection> {
    let application_name = application_name.to_owned();
    let session_settings = [
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
        .min_connections(1)
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
        .map_sqlx_postgres_pool_opts(|options| options.acquire_time_level(log::LevelFilter::Info))
        .map_sqlx_postgres_opts(move |options| {
            options
                .options(session_settings.clone())
                .application_name(&application_name)
        });
    Database::connect(options)
        .await
        .context("cannot connect to PostgreSQL (check DATABASE_URL)")
}

/// Applies pending migrations. The advisory lock lets several instances start at once: the first
/// migrates, the others wait and then find nothing left to do.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
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
pub async fn begin(
    db: &DatabaseConnection,
    metrics: &Metrics,
) -> Result<DatabaseTransaction, DbErr> {
    let connections = db
        .get_postgres_connection_pool()
        .options()
        .get_max_connections();
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
    let admin = Database::connect(admin_url.expose_secret()).await?;
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
