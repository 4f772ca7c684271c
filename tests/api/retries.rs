//! What the service runs again by itself instead of handing the client an error, and what it
//! shows of waiting for connections: `database_transaction_retries`,
//! `database_pool_acquire_seconds`.
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use home_visits::error::AppError;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use secrecy::ExposeSecret;
use serde_json::json;
use testkit::eventually;

use crate::helpers::{TestApp, fresh_database, start_service_process};

async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text")
}

/// The value of the sample line named `series` exactly (name and labels), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn retries(text: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!("home_visits_database_transaction_retries_total{{reason=\"{reason}\"}}"),
    )
}

/// Until `wanted` backends of this test's database run `condition`'s way.
async fn until_backends(app: &TestApp, condition: &str, wanted: i64) {
    let what = format!("{wanted} backends with {condition}");
    eventually(Duration::from_secs(5), &what, || async {
        let found: Vec<i64> = app
            .query_column(&format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"
            ))
            .await;
        (found == [wanted]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pooled_connections_killed_while_idle_cost_a_retry_not_an_error() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    app.requested_visit(&ann.access_token, 10).await;
    let before = retries(
        &metrics_text(&app.http, &app.address).await,
        "connection_lost",
    );

    // What a database restart or a failover does to a pool: its idle connections die. One idle
    // for less than half a second is handed out without a ping, so the next BEGIN finds out.
    let killed: Vec<bool> = app
        .query_column(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'home-visits'",
        )
        .await;
    assert!(!killed.is_empty(), "the pool had connections to kill");
    until_backends(&app, "application_name = 'home-visits'", 0).await;
    let booked = app.request_visit(&ann.access_token, 10).await;
    assert!(!booked.has_errors(), "{booked}");

    let after = retries(
        &metrics_text(&app.http, &app.address).await,
        "connection_lost",
    );
    assert!(after > before, "no retry counted: {before} -> {after}");
}

#[tokio::test]
async fn a_deadlock_victim_is_run_again_and_succeeds() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let lock = |user: &str| format!("SELECT 1 FROM balances WHERE user_id = '{user}' FOR UPDATE");
    let before = retries(&metrics_text(&app.http, &app.address).await, "deadlock");

    // The holder takes Bob's row and, once the victim holds Ann's and waits for Bob's, asks for
    // Ann's: a cycle. The victim checks for deadlocks first (1 s against the holder's 30 s),
    // so PostgreSQL rolls the victim back; run again, it waits for the holder and succeeds. (The
    // tests' role is the local cluster's superuser, which `SET deadlock_timeout` needs.)
    let holder = app.db.begin().await.expect("holder");
    holder
        .execute_unprepared("SET LOCAL deadlock_timeout = '30s'")
        .await
        .expect("set");
    holder
        .execute_unprepared(&lock(&bob.id))
        .await
        .expect("Bob's row");
    let attempts = AtomicU32::new(0);
    let victim = app.state.retrying(|| async {
        attempts.fetch_add(1, Ordering::SeqCst);
        let txn = app.state.begin().await?;
        txn.execute_unprepared("SET LOCAL deadlock_timeout = '1s'")
            .await?;
        txn.execute_unprepared(&lock(&ann.id)).await?;
        txn.execute_unprepared(&lock(&bob.id)).await?;
        txn.commit().await?;
        Ok::<_, AppError>(())
    });
    let closing = async {
        until_backends(&app, "wait_event_type = 'Lock'", 1).await;
        holder.execute_unprepared(&lock(&ann.id)).await?;
        holder.commit().await
    };
    let (outcome, closed) = tokio::join!(victim, closing);
    closed.expect("the holder got Ann's row once the victim was rolled back");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "rolled back once, run twice"
    );

    // The instance counts its own: exactly this one retry, and the one deadlock behind it.
    let after = metrics_text(&app.http, &app.address).await;
    assert_eq!((before, retries(&after, "deadlock")), (0.0, 1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"home_visits_database_contention_total{kind="deadlock"}"#
        ),
        1.0,
        "{after}"
    );
}

#[tokio::test]
async fn waiting_for_a_pooled_connection_shows_in_the_acquire_histogram() {
    let database = fresh_database().await;
    let url = database.url.expose_secret();
    // One connection in the request pool: while one call holds it, the next waits for it.
    let service = start_service_process(url, &[("DATABASE_POOL_SIZE", "1")]).await;
    let base = format!("http://127.0.0.1:{}", service.port);
    let http = reqwest::Client::new();
    let client = testkit::client::Client::new(&base).expect("a client");
    let member = client
        .register("pool@example.com", "a password for the pool")
        .await
        .expect("registered");
    let sum = "home_visits_database_pool_acquire_seconds_sum";
    let before = metrics_text(&http, &base).await;

    // The booking takes the pool's connection and waits on the balance row the test holds; the
    // `me` query behind it waits for that connection until the test lets go, 600 ms later.
    let watcher = Database::connect(url).await.expect("connected");
    let hold = watcher.begin().await.expect("began");
    hold.execute_unprepared(&format!(
        "SELECT 1 FROM balances WHERE user_id = '{}' FOR UPDATE",
        member.user_id
    ))
    .await
    .expect("locked");
    let booking = tokio::spawn({
        let (client, token) = (client.clone(), member.token.clone());
        async move { client.request_visit(&token, 10, None).await }
    });
    eventually(
        Duration::from_secs(5),
        "the booking waiting on the row",
        || async {
            let waiting = watcher
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT count(*) AS waiting FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ))
                .await
                .expect("asked")
                .and_then(|row| row.try_get::<i64>("", "waiting").ok());
            (waiting == Some(1)).then_some(())
        },
    )
    .await;
    // The `me` behind it waits for the pool's one connection for this long: what is measured.
    let me = tokio::spawn({
        let (client, token) = (client.clone(), member.token.clone());
        async move { client.send(Some(&token), "{ me { id } }", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    hold.commit().await.expect("let go");
    booking.await.expect("booking").expect("booked");
    let seen = me.await.expect("me").expect("answered");
    assert_eq!(seen["data"]["me"]["id"], member.user_id.as_str(), "{seen}");

    let after = metrics_text(&http, &base).await;
    let waited = sample(&after, sum) - sample(&before, sum);
    assert!(
        waited >= 0.3,
        "`me` waited up to 600 ms for the connection; the histogram shows {waited} s"
    );
}
