//! The two-instance concurrency harness for home-visits. Black-box: it drives instances over HTTP
//! GraphQL only, and reads PostgreSQL only to check the invariants of the books (its faults also
//! reach the database from outside: terminated connections, a held row lock).
pub mod bench;
pub mod cpu;
pub mod harness;
pub mod progress;
pub mod replay;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod setup;
pub mod suite;

// What the service's own tests use too lives in `testkit`; the harness reads it by the same paths.
pub use testkit::{client, instances, invariants, live, nats, reply};

use sea_orm::ConnectionTrait;

/// Drops and re-creates the database a PostgreSQL URL names (connecting to `postgres` beside it).
pub async fn recreate_database(database_url: &str) -> anyhow::Result<()> {
    let (admin, name) = admin_of(database_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    Ok(())
}

/// Drops the database a PostgreSQL URL names.
pub async fn drop_database(database_url: &str) -> anyhow::Result<()> {
    let (admin, name) = admin_of(database_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin.close().await?;
    Ok(())
}

/// A connection to `postgres` beside the database `database_url` names, and that name.
async fn admin_of(database_url: &str) -> anyhow::Result<(sea_orm::DatabaseConnection, String)> {
    let mut admin_url = reqwest::Url::parse(database_url)?;
    let name = admin_url.path().trim_start_matches('/').to_string();
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "the database URL needs a plain database name (letters, digits, _): {name}"
    );
    admin_url.set_path("/postgres");
    Ok((sea_orm::Database::connect(admin_url.as_str()).await?, name))
}
