//! One instance at a time does some jobs for the whole deployment (the relay, the live feed's
//! reader of the log): the holder of a session advisory lock leads. The lock lives on a direct
//! connection of the candidate's own (a transaction pooler would drop a session lock), so when the
//! leader dies its connection closes, the lock is freed, and another candidate takes over at its
//! next try. A candidate keeps its connection between tries: a try is one query, not a new
//! PostgreSQL session every second.
use sea_orm::sqlx::{self, Connection, PgConnection, postgres::PgConnectOptions};

pub struct Candidate {
    options: PgConnectOptions,
    key: i64,
    name: String,
    connection: Option<PgConnection>,
}

impl Candidate {
    /// Offers to lead for the lock `key`; `name` is the connection's `application_name`.
    pub fn new(options: &PgConnectOptions, key: i64, name: &str) -> Self {
        Self {
            options: options.clone().application_name(name),
            key,
            name: name.to_string(),
            connection: None,
        }
    }

    /// The connection holding the lock, if this candidate has it now; `None` when another leads
    /// (or the database cannot be reached).
    pub async fn try_to_lead(&mut self) -> Option<&mut PgConnection> {
        if self.connection.is_none() {
            match PgConnection::connect_with(&self.options).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    tracing::debug!(%error, name = self.name, "cannot connect for a leader lock");
                    return None;
                }
            }
        }
        let connection = self.connection.as_mut()?;
        let locked: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *connection)
            .await;
        match locked {
            Ok(true) => self.connection.as_mut(),
            Ok(false) => None,
            Err(error) => {
                tracing::debug!(%error, name = self.name, "cannot take a leader lock");
                self.connection = None;
                None
            }
        }
    }

    /// Gives the lead up (its connection goes, and the lock with it), after the leader's
    /// connection failed or it stopped leading for another reason.
    pub async fn resign(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}
