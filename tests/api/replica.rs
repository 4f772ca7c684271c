//! Reads on a streaming replica (`DATABASE_READ_URL`). Each test runs a primary and a standby of
//! its own (`initdb`, then `pg_basebackup -R`), so pausing or stopping the standby touches no
//! other test.
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use testkit::{client::Client, eventually, pg_cluster::Cluster};

use crate::helpers::{ServiceProcess, start_service_process};

const DATABASE: &str = "home_visits";

struct Deployment {
    primary: Cluster,
    standby: Cluster,
    service: ServiceProcess,
    client: Client,
    http: reqwest::Client,
}

impl Deployment {
    async fn start(env: &[(&str, &str)]) -> Self {
        let primary = Cluster::primary(DATABASE).await.expect("a primary");
        let standby = Cluster::standby_of(&primary).await.expect("a standby");
        let read_url = standby.url(DATABASE);
        let mut env = env.to_vec();
        env.push(("DATABASE_READ_URL", &read_url));
        let service = start_service_process(&primary.url(DATABASE), &env).await;
        let base = format!("http://127.0.0.1:{}", service.port);
        let client = Client::new(&base).expect("a client");
        let deployment = Self {
            primary,
            standby,
            service,
            client,
            http: reqwest::Client::new(),
        };
        deployment.until_replica("streaming").await;
        deployment
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.service.port)
    }

    async fn until_replica(&self, state: &str) {
        eventually(
            Duration::from_secs(15),
            &format!("/readyz reporting the replica {state}"),
            || async {
                let ready = self.client.readiness().await?;
                (ready["replica"]["state"] == state).then_some(())
            },
        )
        .await;
    }

    /// Reads counted as served by `where` so far.
    async fn reads_served_by(&self, place: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("text");
        let wanted = format!("home_visits_database_reads_total{{served_by=\"{place}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn standby_sql(&self, sql: &str) {
        let standby = Database::connect(self.standby.url(DATABASE))
            .await
            .expect("the standby answers");
        standby
            .execute_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql.to_string(),
            ))
            .await
            .expect("ran on the standby");
        let _ = standby.close().await;
    }
}

/// `rounds` times: requests a visit and at once lists the member's own visits, which must hold
/// it (the list is one a replica may serve).
async fn own_writes_show_at_once(client: &Client, token: &str, rounds: usize) {
    for round in 0..rounds {
        let visit = client
            .request_visit(token, 1, None)
            .await
            .expect("requested");
        assert!(
            own_visits(client, token).await.contains(&visit),
            "round {round}: the member's own new visit is missing from their list"
        );
    }
}

/// The member's own list of visits, by id.
async fn own_visits(client: &Client, token: &str) -> Vec<String> {
    let reply = client
        .send(
            Some(token),
            "{ visits(filter: { role: MEMBER }, first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await
        .expect("the list answers");
    reply["data"]["visits"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .filter_map(|edge| edge["node"]["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_replica_serves_reads_once_it_has_the_callers_own_writes() {
    let deployment = Deployment::start(&[]).await;
    let client = &deployment.client;
    let member = client
        .register("replica-member@example.com", "a password for the replica")
        .await
        .expect("registered");
    let before = deployment.reads_served_by("replica").await;
    own_writes_show_at_once(client, &member.token, 20).await;
    let served = deployment.reads_served_by("replica").await - before;
    assert!(served > 0.0, "no read went to the replica that kept up");
    let ready = client.readiness().await.expect("readyz");
    assert!(ready["replica"]["lagMs"].is_u64(), "{ready}");
}

#[tokio::test]
async fn a_paused_or_stopped_replica_is_skipped_and_nothing_is_lost() {
    let deployment = Deployment::start(&[]).await;
    let client = &deployment.client;
    let member = client
        .register("paused-member@example.com", "a password for the replica")
        .await
        .expect("registered");

    deployment.standby_sql("SELECT pg_wal_replay_pause()").await;
    deployment.until_replica("paused").await;
    let primary_before = deployment.reads_served_by("primary").await;
    let replica_before = deployment.reads_served_by("replica").await;
    // The paused standby has none of these: a read there would miss each.
    own_writes_show_at_once(client, &member.token, 5).await;
    assert_eq!(
        deployment.reads_served_by("replica").await,
        replica_before,
        "a read went to the paused replica"
    );
    assert!(deployment.reads_served_by("primary").await >= primary_before + 5.0);
    deployment
        .standby_sql("SELECT pg_wal_replay_resume()")
        .await;
    deployment.until_replica("streaming").await;

    deployment.standby.stop().await.expect("the standby stops");
    deployment.until_replica("down").await;
    let status = deployment
        .http
        .get(format!("{}/readyz", deployment.base()))
        .send()
        .await
        .expect("readyz answers")
        .status();
    assert_eq!(status, 200, "a replica down does not take the instance out");
    own_writes_show_at_once(client, &member.token, 1).await;

    deployment
        .standby
        .start()
        .await
        .expect("the standby starts");
    deployment.until_replica("streaming").await;
    let replica_before = deployment.reads_served_by("replica").await;
    eventually(
        Duration::from_secs(10),
        "reads back on the replica",
        || async {
            own_visits(client, &member.token).await;
            (deployment.reads_served_by("replica").await > replica_before).then_some(())
        },
    )
    .await;
    drop(deployment.primary);
}

#[tokio::test]
async fn a_replica_trailing_within_the_bound_never_hides_the_callers_own_write() {
    let deployment = Deployment::start(&[("DATABASE_READ_MAX_LAG_MS", "10000")]).await;
    let client = &deployment.client;
    let member = client
        .register("trailing-member@example.com", "a password for the replica")
        .await
        .expect("registered");
    // Half a second behind, well inside the bound: the replica stays in use, and only the read
    // fence keeps a read there from missing what its caller has just written.
    deployment
        .standby_sql("ALTER SYSTEM SET recovery_min_apply_delay = '500ms'")
        .await;
    deployment.standby_sql("SELECT pg_reload_conf()").await;
    own_writes_show_at_once(client, &member.token, 10).await;
    let ready = client.readiness().await.expect("readyz");
    assert_eq!(ready["replica"]["state"], "streaming", "{ready}");
}

#[tokio::test]
async fn a_replica_further_behind_than_the_bound_is_skipped() {
    let deployment = Deployment::start(&[("DATABASE_READ_MAX_LAG_MS", "300")]).await;
    let client = &deployment.client;
    let member = client
        .register("lagging-member@example.com", "a password for the replica")
        .await
        .expect("registered");
    // Replay held two seconds behind what it receives: lag, while replay itself runs.
    deployment
        .standby_sql("ALTER SYSTEM SET recovery_min_apply_delay = '2s'")
        .await;
    deployment.standby_sql("SELECT pg_reload_conf()").await;
    eventually(
        Duration::from_secs(15),
        "/readyz reporting the replica lagging",
        || async {
            client.request_visit(&member.token, 1, None).await.ok()?;
            let ready = client.readiness().await?;
            (ready["replica"]["state"] == "lagging").then_some(())
        },
    )
    .await;
    let replica_before = deployment.reads_served_by("replica").await;
    own_writes_show_at_once(client, &member.token, 1).await;
    assert_eq!(deployment.reads_served_by("replica").await, replica_before);
}

#[tokio::test]
async fn a_read_url_that_is_no_standby_is_refused_at_start() {
    let primary = Cluster::primary(DATABASE).await.expect("a primary");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
            .arg("serve")
            .env("DATABASE_URL", primary.url(DATABASE))
            .env("DATABASE_READ_URL", primary.url(DATABASE))
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", "a test secret for the service process")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the service gives up at start")
    .expect("ran");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("DATABASE_READ_URL"), "{said}");
}
