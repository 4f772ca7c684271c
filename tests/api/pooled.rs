//! Behind PgBouncer in transaction mode (`DATABASE_POOL_MODE=transaction`), as Debian ships it
//! (1.18: no prepared statements of its own). Each test starts its own pooler, with fewer server
//! connections than the service's pool holds, so consecutive transactions of one client land on
//! different server connections.
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use secrecy::ExposeSecret;
use testkit::{client::Client, eventually, pgbouncer::PgBouncer};

use crate::helpers::{empty_database, fresh_database, start_service_process};

fn pooled_env<'a>(direct: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DATABASE_POOL_MODE", "transaction"),
        ("DATABASE_DIRECT_URL", direct),
        ("DATABASE_POOL_SIZE", "6"),
    ];
    env.extend_from_slice(more);
    env
}

#[tokio::test]
async fn a_first_start_migrates_and_every_path_works_through_a_transaction_pooler() {
    let database = empty_database().await;
    let direct = database.url.expose_secret();
    let bouncer = PgBouncer::start(direct, "transaction", 2)
        .await
        .expect("pgbouncer");
    let service = start_service_process(&bouncer.url(direct), &pooled_env(direct, &[])).await;
    let client = Client::new(&format!("http://127.0.0.1:{}", service.port)).expect("a client");

    let member = client
        .register("pooled-member@example.com", "a password for the pool")
        .await
        .expect("registered through the pooler");
    let pal = client
        .register("pooled-pal@example.com", "a password for the pool")
        .await
        .expect("registered through the pooler");
    // Many transactions at once over the pooler's two server connections: each statement must
    // survive landing on whichever one is free.
    let requests = (0..12).map(|_| client.request_visit(&member.token, 5, None));
    let visits: Vec<String> = futures::future::join_all(requests)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every request answered");
    for visit in &visits[..6] {
        client
            .accept_visit(&pal.token, visit)
            .await
            .expect("accepted");
        let paid = client
            .complete_visit(&pal.token, visit)
            .await
            .expect("completed");
        assert_eq!((paid.minutes, paid.pal_credit, paid.fee), (5, 4, 1));
    }
    let member_balance = client.balance(&member.token).await.expect("balance");
    assert_eq!(
        (member_balance.minutes, member_balance.outstanding),
        (90, 30)
    );
    assert_eq!(
        client.balance(&pal.token).await.expect("balance").minutes,
        144
    );

    // The notifications consumer reads the log and writes its read model through the pooler too.
    eventually(
        Duration::from_secs(15),
        "the pal's notifications of the six completions",
        || async {
            let reply = client
                .send(
                    Some(&pal.token),
                    "{ notifications(first: 50) { edges { node { id } } } }",
                    serde_json::json!({}),
                )
                .await
                .ok()?;
            let seen = reply["data"]["notifications"]["edges"].as_array()?.len();
            (seen >= 6).then_some(())
        },
    )
    .await;
    let readiness = client.readiness().await.expect("readyz answers");
    assert_eq!(readiness["status"], "ready", "{readiness}");
    assert_eq!(readiness["consumers"][0]["name"], "notifications");
}

#[tokio::test]
async fn a_held_balance_lock_ends_in_a_retryable_conflict_through_the_pooler() {
    let database = fresh_database().await;
    let direct = database.url.expose_secret();
    let bouncer = PgBouncer::start(direct, "transaction", 2)
        .await
        .expect("pgbouncer");
    let env = pooled_env(direct, &[("LOCK_TIMEOUT_MS", "400")]);
    let service = start_service_process(&bouncer.url(direct), &env).await;
    let client = Client::new(&format!("http://127.0.0.1:{}", service.port)).expect("a client");
    let member = client
        .register("held-member@example.com", "a password for the pool")
        .await
        .expect("registered");
    let pal = client
        .register("held-pal@example.com", "a password for the pool")
        .await
        .expect("registered");
    let visit = client
        .request_visit(&member.token, 10, None)
        .await
        .expect("requested");
    client
        .accept_visit(&pal.token, &visit)
        .await
        .expect("accepted");

    // The pooler's server connections start with PostgreSQL's defaults (no lock timeout): only
    // the service's own per-transaction setting can end this wait.
    let watcher = Database::connect(direct).await.expect("connected");
    let hold = watcher.begin().await.expect("began");
    hold.execute_unprepared(&format!(
        "SELECT 1 FROM balances WHERE user_id = '{}' FOR UPDATE",
        member.user_id
    ))
    .await
    .expect("locked");
    let started = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        client.complete_visit(&pal.token, &visit),
    )
    .await
    .expect("the lock timeout ends the wait, not the test's deadline")
    .expect_err("the balance row is held");
    let waited = started.elapsed();
    assert_eq!(refused.code, "CONFLICT", "{refused:?}");
    assert!(refused.retryable, "{refused:?}");
    assert!(
        waited >= Duration::from_millis(350),
        "it waited for the lock timeout first: {waited:?}"
    );
    hold.rollback().await.expect("let go");
    let paid = client
        .complete_visit(&pal.token, &visit)
        .await
        .expect("completed once the lock is gone");
    assert_eq!(paid.minutes, 10);
}

#[tokio::test]
async fn a_pooler_in_statement_mode_is_refused_at_start() {
    let database = fresh_database().await;
    let direct = database.url.expose_secret();
    let bouncer = PgBouncer::start(direct, "statement", 2)
        .await
        .expect("pgbouncer");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
            .arg("serve")
            .env("DATABASE_URL", bouncer.url(direct))
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", "a test secret for the service process")
            .envs(pooled_env(direct, &[]))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the service gives up at start")
    .expect("ran");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("DATABASE_POOL_MODE"), "{said}");
    assert!(said.contains("statement mode"), "{said}");
}
