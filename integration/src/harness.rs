//! What every scenario is given: clients of the instances (calls alternate between them), the
//! database to judge the books by, and the progress the run shows.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::{
    client::{Client, Session},
    progress::Progress,
};

pub const PASSWORD: &str = "harness password 1";

pub struct Harness {
    pub clients: Vec<Client>,
    pub db: DatabaseConnection,
    /// The URL `db` was opened with (scenarios that deploy a stand of their own put their
    /// database beside it).
    pub database_url: String,
    /// What the current scenario has done so far (shown live, drawn in the report).
    pub progress: Arc<Progress>,
    run_id: String,
    users: AtomicU64,
}

/// A scenario's verdict: `Ok(detail)` or `Err(what went wrong)`.
pub type Verdict = Result<String, String>;

impl Harness {
    pub fn new(clients: Vec<Client>, db: DatabaseConnection, database_url: &str) -> Self {
        Self {
            clients,
            db,
            database_url: database_url.to_string(),
            progress: Arc::default(),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            users: AtomicU64::new(0),
        }
    }

    /// A harness over other instances and their database that shows its progress as this one's
    /// (a scenario's own stand, run inside the suite).
    pub fn over(&self, clients: Vec<Client>, db: DatabaseConnection, database_url: &str) -> Self {
        Self {
            progress: self.progress.clone(),
            ..Self::new(clients, db, database_url)
        }
    }

    /// The instance for the `index`-th call of a scenario: calls alternate between instances.
    pub fn client(&self, index: usize) -> &Client {
        &self.clients[index % self.clients.len()]
    }

    /// Registers a fresh user through one of the instances.
    pub async fn new_user(&self, label: &str) -> Result<Session, String> {
        let number = self.users.fetch_add(1, Ordering::Relaxed);
        let email = format!("{label}-{}-{number}@harness.test", self.run_id);
        self.client(usize::try_from(number).unwrap_or(0))
            .register(&email, PASSWORD)
            .await
            .map_err(|failure| format!("registering {email} failed: {failure:?}"))
    }

    pub async fn new_users(&self, label: &str, count: usize) -> Result<Vec<Session>, String> {
        let mut users = Vec::with_capacity(count);
        for _ in 0..count {
            users.push(self.new_user(label).await?);
        }
        Ok(users)
    }

    pub(crate) async fn transactions_for(&self, visit_id: &str) -> Result<i64, String> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT count(*) FROM transactions WHERE visit_id = $1::uuid",
                [visit_id.into()],
            ))
            .await
            .map_err(|error| error.to_string())?
            .ok_or("no row")?;
        row.try_get_by_index::<i64>(0)
            .map_err(|error| error.to_string())
    }

    pub(crate) async fn visits_of(&self, member_id: &str) -> Result<i64, String> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT count(*) FROM visits WHERE member_id = $1::uuid",
                [member_id.into()],
            ))
            .await
            .map_err(|error| error.to_string())?
            .ok_or("no row")?;
        row.try_get_by_index::<i64>(0)
            .map_err(|error| error.to_string())
    }
}
