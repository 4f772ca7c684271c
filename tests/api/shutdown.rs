//! SIGTERM: the instance stops taking connections at once, lets what is in flight finish (within
//! `SHUTDOWN_GRACE_SECONDS`), and exits 0.
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement, TransactionTrait};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::eventually;

use crate::helpers::{ServiceProcess, fresh_database, start_service_process};

struct Running {
    service: tokio::process::Child,
    port: u16,
    url: String,
    db: sea_orm::DatabaseConnection,
    token: String,
    user_id: String,
    _database: crate::helpers::TestDatabase,
}

/// The binary on a fresh database with one registered member.
async fn start(grace_seconds: u64) -> Running {
    let database = fresh_database().await;
    let grace = grace_seconds.to_string();
    let ServiceProcess {
        child: service,
        port,
        mut lines,
        ..
    } = start_service_process(
        database.url.expose_secret(),
        &[("SHUTDOWN_GRACE_SECONDS", grace.as_str())],
    )
    .await;
    // Keep reading stderr so the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://127.0.0.1:{port}/graphql");
    let registered: Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({
            "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
            "variables": { "input": { "email": "term@example.com", "password": "a password for sigterm", "firstName": "Te", "lastName": "Rm" } }
        }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let db = Database::connect(database.url.expose_secret())
        .await
        .expect("connects");
    Running {
        service,
        port,
        url,
        db,
        token: registered["data"]["register"]["accessToken"]
            .as_str()
            .expect("a token")
            .to_string(),
        user_id: registered["data"]["register"]["user"]["id"]
            .as_str()
            .expect("an id")
            .to_string(),
        _database: database,
    }
}

/// Sends a booking that waits in the database on `lock` (the member's balance row), and returns
/// once it does.
async fn hold_a_request(
    running: &Running,
    lock: &sea_orm::DatabaseTransaction,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    lock.execute_unprepared(&format!(
        "SELECT 1 FROM balances WHERE user_id = '{}' FOR UPDATE",
        running.user_id
    ))
    .await
    .expect("locked");
    let (url, token) = (running.url.clone(), running.token.clone());
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .json(&json!({
                "query": "mutation($input: RequestVisitInput!) { requestVisit(input: $input) { id status } }",
                "variables": { "input": { "date": chrono::Utc::now().date_naive().to_string(), "minutes": 30, "tasks": [{ "name": "Tea" }] } }
            }))
            .send()
            .await
    });
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    eventually(
        Duration::from_secs(5),
        "the request waiting on the lock",
        || async {
            let row = running
                .db
                .query_one_raw(Statement::from_string(
                    running.db.get_database_backend(),
                    waiting,
                ))
                .await
                .expect("asked")
                .expect("a row");
            (row.try_get::<i64>("", "n").expect("a count") > 0).then_some(())
        },
    )
    .await;
    in_flight
}

fn sigterm(running: &Running) {
    let pid = running.service.id().expect("a pid").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_zero() {
    let mut running = start(20).await;
    let lock = running.db.begin().await.expect("a transaction");
    let in_flight = hold_a_request(&running, &lock).await;

    sigterm(&running);
    // New connections are refused while the held request is still in flight.
    eventually(
        Duration::from_secs(2),
        "new connections refused after SIGTERM",
        || async {
            let fresh = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}/healthz", running.port))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            fresh.is_err().then_some(())
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the held request ended before it was let go"
    );

    lock.rollback().await.expect("let go");
    let answered: Value = in_flight
        .await
        .expect("the task")
        .expect("the held request got its answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        answered["data"]["requestVisit"]["status"], "REQUESTED",
        "{answered}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), running.service.wait())
        .await
        .expect("the process exits once the request is answered")
        .expect("waited");
    assert_eq!(exit.code(), Some(0), "{exit}");
}

#[tokio::test]
async fn a_request_that_outstays_the_grace_does_not_keep_the_process_alive() {
    let mut running = start(1).await;
    let lock = running.db.begin().await.expect("a transaction");
    let _in_flight = hold_a_request(&running, &lock).await;
    let signalled_at = std::time::Instant::now();
    sigterm(&running);
    let exit = tokio::time::timeout(Duration::from_secs(10), running.service.wait())
        .await
        .expect("the process exits after the grace, the request still waiting")
        .expect("waited");
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        signalled_at.elapsed() >= Duration::from_secs(1),
        "it waited the grace first"
    );
    lock.rollback().await.expect("let go");
}
