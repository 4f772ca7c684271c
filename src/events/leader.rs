//! One instance at a time does some jobs for the whole deployment (the relay, the live feed's
//! reader): the holder of a session advisory lock leads. The lock lives on a direct connection of
//! the leader's own (a transaction pooler would drop a session lock), so when the leader dies its
//! connection closes, the lock is freed, and another instance takes over at its next try.
use sea_orm::sqlx::{self, Connection, PgConnection, postgres::PgConnectOptions};

/// A connection holding the lock `key`, or `None` if another instance leads (or the database
/// cannot be reached). `name` is the connection's `application_name`.
pub async fn take(options: &PgConnectOptions, key: i64, name: &str) -> Option<PgConnection> {
    let options = options.clone().application_name(name);
    let mut connection = match PgConnection::connect_with(&options).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, name, "cannot connect for a leader lock");
            return None;
        }
    };
    let locked: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut connection)
        .await;
    match locked {
        Ok(true) => Some(connection),
        Ok(false) => {
            let _ = connection.close().await;
            None
        }
        Err(error) => {
            tracing::debug!(%error, name, "cannot take a leader lock");
            None
        }
    }
}
