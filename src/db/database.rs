//! The request pool as the rest of the service sees it: SeaORM's connection, plus what it takes
//! to run through a transaction pooler (PgBouncer's `pool_mode = transaction`).
//!
//! Such a pooler gives every transaction whichever server connection is free, so nothing a
//! session holds survives from one transaction to the next: not a setting, not a prepared
//! statement. Behind one, every statement therefore runs inside a transaction (sqlx prepares
//! and executes a statement in two round trips, and outside a transaction the pooler may switch
//! servers between them), and every transaction starts by setting its own timeouts and dropping
//! whatever statements the connection's previous client left, in one round trip after `BEGIN`.
use std::{pin::Pin, sync::Arc};

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, Statement, TransactionError, TransactionOptions,
    TransactionTrait, sqlx::PgPool,
};

#[derive(Clone, Debug)]
pub struct Database {
    connection: DatabaseConnection,
    /// Behind a transaction pooler: what every transaction runs right after `BEGIN`.
    transaction_preamble: Option<Arc<str>>,
}

impl Database {
    /// A pool whose connections are sessions of their own.
    pub fn direct(connection: DatabaseConnection) -> Self {
        Self {
            connection,
            transaction_preamble: None,
        }
    }

    /// A pool behind a transaction pooler; `preamble` restores what a session would have kept.
    pub fn behind_transaction_pooler(connection: DatabaseConnection, preamble: String) -> Self {
        Self {
            connection,
            transaction_preamble: Some(preamble.into()),
        }
    }

    pub fn is_behind_transaction_pooler(&self) -> bool {
        self.transaction_preamble.is_some()
    }

    pub fn pool(&self) -> &PgPool {
        self.connection.get_postgres_connection_pool()
    }

    /// Called with every statement run (the tests count statements per request with it).
    pub fn set_metric_callback<F>(&mut self, callback: F)
    where
        F: Fn(&sea_orm::metric::Info<'_>) + Send + Sync + 'static,
    {
        self.connection.set_metric_callback(callback);
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.connection.ping().await
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.connection.close().await
    }

    async fn begin_with(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        let transaction = self
            .connection
            .begin_with_config(isolation_level, access_mode)
            .await?;
        if let Some(preamble) = &self.transaction_preamble {
            transaction.execute_unprepared(preamble).await?;
        }
        Ok(transaction)
    }
}

/// Each call runs straight on the pool, or behind a transaction pooler in a transaction of its
/// own.
#[async_trait::async_trait]
impl ConnectionTrait for Database {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        if !self.is_behind_transaction_pooler() {
            return self.connection.execute_raw(statement).await;
        }
        let transaction = self.begin_with(None, None).await?;
        let outcome = transaction.execute_raw(statement).await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if !self.is_behind_transaction_pooler() {
            return self.connection.execute_unprepared(sql).await;
        }
        let transaction = self.begin_with(None, None).await?;
        let outcome = transaction.execute_unprepared(sql).await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        if !self.is_behind_transaction_pooler() {
            return self.connection.query_one_raw(statement).await;
        }
        let transaction = self.begin_with(None, None).await?;
        let row = transaction.query_one_raw(statement).await?;
        transaction.commit().await?;
        Ok(row)
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if !self.is_behind_transaction_pooler() {
            return self.connection.query_all_raw(statement).await;
        }
        let transaction = self.begin_with(None, None).await?;
        let rows = transaction.query_all_raw(statement).await?;
        transaction.commit().await?;
        Ok(rows)
    }
}

type Callback<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

#[async_trait::async_trait]
impl TransactionTrait for Database {
    type Transaction = DatabaseTransaction;

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.begin_with(None, None).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.begin_with(isolation_level, access_mode).await
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.begin_with(options.isolation_level, options.access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.transaction_with_config(callback, None, None).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let transaction = self
            .begin_with(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        match callback(&transaction).await {
            Ok(value) => {
                transaction
                    .commit()
                    .await
                    .map_err(TransactionError::Connection)?;
                Ok(value)
            }
            Err(error) => {
                transaction
                    .rollback()
                    .await
                    .map_err(TransactionError::Connection)?;
                Err(TransactionError::Transaction(error))
            }
        }
    }
}
