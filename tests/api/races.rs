//! Many clients at once against one instance: the locks, not luck, must decide the outcome.
use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, error_code, tomorrow};

fn codes(responses: &[Value]) -> Vec<Option<&str>> {
    responses.iter().map(error_code).collect()
}

#[tokio::test]
async fn twenty_concurrent_ten_minute_requests_on_120_minutes_book_exactly_twelve() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;

    let responses = join_all((0..20).map(|_| app.request_visit(&ann.access_token, 10))).await;

    let booked = responses
        .iter()
        .filter(|response| error_code(response).is_none())
        .count();
    let refused = codes(&responses)
        .into_iter()
        .filter(|code| *code == Some("INSUFFICIENT_MINUTES"))
        .count();
    assert_eq!((booked, refused), (12, 8), "{responses:?}");
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 120, 0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn ten_pals_completing_one_visit_at_once_pay_it_once() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;
    let mut pals = Vec::new();
    for index in 0..10 {
        pals.push(app.register_user(&format!("pal{index}")).await);
    }
    let visit_id = app.requested_visit(&ann.access_token, 60).await;

    let responses = join_all(
        pals.iter()
            .map(|pal| app.complete_visit(&pal.access_token, &visit_id)),
    )
    .await;

    let winners = responses
        .iter()
        .filter(|response| error_code(response).is_none())
        .count();
    assert_eq!(winners, 1, "{responses:?}");
    assert!(
        codes(&responses)
            .into_iter()
            .flatten()
            .all(|code| code == "CONFLICT"),
        "losers see CONFLICT: {responses:?}"
    );
    let transactions: Vec<i64> = app.query_column("SELECT count(*) FROM transactions").await;
    assert_eq!(transactions, vec![1]);
    assert_eq!(app.minutes_of(&ann.access_token).await, (60, 0, 60));
    app.assert_invariants().await;
}

#[tokio::test]
async fn completions_racing_a_new_request_never_overcommit_the_member() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;
    let mut pals = Vec::new();
    let mut visits = Vec::new();
    for index in 0..6 {
        pals.push(app.register_user(&format!("pal{index}")).await);
        visits.push(app.requested_visit(&ann.access_token, 20).await);
    }

    let completions = join_all(
        pals.iter()
            .zip(&visits)
            .map(|(pal, visit_id)| app.complete_visit(&pal.access_token, visit_id)),
    );
    let extra_request = app.request_visit(&ann.access_token, 20);
    let (completions, extra_request) = tokio::join!(completions, extra_request);

    assert!(
        completions
            .iter()
            .all(|response| error_code(response).is_none()),
        "{completions:?}"
    );
    assert_eq!(
        error_code(&extra_request),
        Some("INSUFFICIENT_MINUTES"),
        "{extra_request}"
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (0, 0, 0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn crosswise_completions_in_parallel_never_fail_with_an_internal_error() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut anns_visits = Vec::new();
    let mut bobs_visits = Vec::new();
    for _ in 0..6 {
        anns_visits.push(app.requested_visit(&ann.access_token, 10).await);
        bobs_visits.push(app.requested_visit(&bob.access_token, 10).await);
    }

    // Ann pays Bob while Bob pays Ann: both transactions lock the same two balances.
    let complete_all = |pal: &TestUser, visits: &[String]| {
        let token = pal.access_token.clone();
        let visits = visits.to_vec();
        let app = &app;
        async move {
            join_all(
                visits
                    .iter()
                    .map(|visit_id| app.complete_visit(&token, visit_id)),
            )
            .await
        }
    };
    let (by_bob, by_ann) = tokio::join!(
        complete_all(&bob, &anns_visits),
        complete_all(&ann, &bobs_visits)
    );

    for response in by_bob.iter().chain(&by_ann) {
        assert_eq!(error_code(response), None, "{response}");
    }
    // Each paid 60 and earned 6 x 9.
    assert_eq!(app.minutes_of(&ann.access_token).await, (114, 0, 114));
    assert_eq!(app.minutes_of(&bob.access_token).await, (114, 0, 114));
    app.assert_invariants().await;
}

#[tokio::test]
async fn simultaneous_retries_with_one_idempotency_key_book_one_visit() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;
    let input = json!({ "date": tomorrow(), "minutes": 30, "tasks": [{ "name": "Tea" }], "idempotencyKey": "tap-twice" });

    let responses =
        join_all((0..8).map(|_| app.request_visit_with(&ann.access_token, input.clone()))).await;

    let ids: std::collections::HashSet<_> = responses
        .iter()
        .map(|response| {
            response["data"]["requestVisit"]["id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(ids.len(), 1, "{responses:?}");
    assert!(!ids.contains(&None), "{responses:?}");
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 30, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_completion_racing_a_cancellation_leaves_exactly_one_outcome() {
    let app = TestApp::spawn_with(|config| config.database_pool_size = 20).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    for _ in 0..5 {
        let visit_id = app.requested_visit(&ann.access_token, 20).await;

        let (completed, cancelled) = tokio::join!(
            app.complete_visit(&bob.access_token, &visit_id),
            app.cancel_visit(&ann.access_token, &visit_id)
        );

        let winners = [&completed, &cancelled]
            .iter()
            .filter(|response| error_code(response).is_none())
            .count();
        assert_eq!(winners, 1, "{completed} {cancelled}");
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_lock_held_too_long_gives_a_retryable_conflict_not_a_hang() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let app =
        TestApp::spawn_with(|config| config.lock_timeout = std::time::Duration::from_millis(200))
            .await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 30).await;
    let blocker = app.db.begin().await.expect("transaction");
    blocker
        .execute_unprepared(&format!(
            "SELECT 1 FROM visits WHERE id = '{visit_id}' FOR UPDATE"
        ))
        .await
        .expect("lock taken");

    let started = std::time::Instant::now();
    let response = app.complete_visit(&bob.access_token, &visit_id).await;

    assert_eq!(error_code(&response), Some("CONFLICT"), "{response}");
    assert_eq!(response["errors"][0]["extensions"]["retryable"], true);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    blocker.rollback().await.expect("rollback");
    let retried = app.complete_visit(&bob.access_token, &visit_id).await;
    assert_eq!(error_code(&retried), None, "{retried}");
    app.assert_invariants().await;
}
