//! Schema migrations for home-visits. Each migration is plain SQL so the constraints that guard the
//! ledger are visible exactly as PostgreSQL enforces them.
pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_sessions;
mod m20261122_000003_create_balances;
mod m20261122_000004_create_visits;
mod m20261122_000005_create_transactions;
mod m20261201_000001_create_outbox;
mod m20261201_000002_create_consumer_plumbing;
mod m20261201_000003_create_notifications;
mod m20261201_000004_visits_expire;
mod m20261201_000005_sessions_revoked_idx;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_sessions::Migration),
            Box::new(m20261122_000003_create_balances::Migration),
            Box::new(m20261122_000004_create_visits::Migration),
            Box::new(m20261122_000005_create_transactions::Migration),
            Box::new(m20261201_000001_create_outbox::Migration),
            Box::new(m20261201_000002_create_consumer_plumbing::Migration),
            Box::new(m20261201_000003_create_notifications::Migration),
            Box::new(m20261201_000004_visits_expire::Migration),
            Box::new(m20261201_000005_sessions_revoked_idx::Migration),
        ]
    }
}

/// Runs a migration's SQL as written.
pub(crate) async fn execute(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(sql)
        .await
        .map(drop)
}
