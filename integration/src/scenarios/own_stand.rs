//! A stand of a scenario's own, for the scenarios that deploy the service another way (behind
//! PgBouncer, on a NATS cluster, with a replica): a fresh database beside the suite's, and two
//! instances of the harness's binary started with the environment the scenario gives. Its
//! harness shows progress as the suite's; its books and its event stream are checked here,
//! since the suite's own check looks at the suite's database.
use std::path::Path;

use sea_orm::Database;

use crate::{
    client::Client, harness::Harness, instances::SpawnedInstance, invariants,
    scenarios::event_stream::drain_and_check,
};

pub struct OwnStand {
    pub harness: Harness,
    pub instances: Vec<SpawnedInstance>,
}

/// The URL of a database named after the suite's plus `suffix`, on the same server, created
/// afresh (dropped first if a run before left it).
pub async fn fresh_database(suite_url: &str, suffix: &str) -> Result<String, String> {
    let mut url = reqwest::Url::parse(suite_url).map_err(|error| error.to_string())?;
    let name = format!("{}_{suffix}", url.path().trim_start_matches('/'));
    url.set_path(&format!("/{name}"));
    crate::recreate_database(url.as_str())
        .await
        .map_err(|error| format!("creating database {name}: {error:#}"))?;
    Ok(url.to_string())
}

impl OwnStand {
    /// Two instances of `binary` on `instance_database_url` (which may be a pooler in front of
    /// `database_url`) with `env`, and a harness over them judging by `database_url`.
    pub async fn start(
        suite: &Harness,
        binary: &Path,
        database_url: &str,
        instance_database_url: &str,
        env: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let jwt_secret = format!("own-stand-{}", uuid::Uuid::new_v4());
        let mut instances = Vec::new();
        for _ in 0..2 {
            instances.push(
                SpawnedInstance::start_with(
                    binary.to_path_buf(),
                    0,
                    instance_database_url,
                    &jwt_secret,
                    env.clone(),
                )
                .await
                .map_err(|error| format!("starting an instance: {error:#}"))?,
            );
        }
        let clients = instances
            .iter()
            .map(|instance| Client::new(&instance.url()))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|error| error.to_string())?;
        let db = Database::connect(database_url)
            .await
            .map_err(|error| format!("connecting to {database_url}: {error}"))?;
        Ok(Self {
            harness: suite.over(clients, db, database_url),
            instances,
        })
    }

    /// The stream against the log (through `nats_url`), then the books; the problems found, or
    /// a summary of both.
    pub async fn check(&self, nats_url: &str) -> Result<String, String> {
        let findings = drain_and_check(&self.harness, nats_url).await?;
        let books = invariants::check(&self.harness.db)
            .await
            .map_err(|error| format!("checking the books: {error:#}"))?;
        let mut problems = findings.problems;
        if !books.is_clean() {
            problems.push(format!("invariants broken: {books}"));
        }
        if problems.is_empty() {
            Ok(format!("{}; books balanced", findings.summary))
        } else {
            Err(format!("{}; {}", problems.join("; "), findings.summary))
        }
    }

    pub async fn stop(mut self) {
        for instance in &mut self.instances {
            let _ = instance.kill().await;
        }
        let _ = self.harness.db.close().await;
    }
}
