//! Many clients at once against one instance: the locks, not luck, must decide the outcome. These
//! go through the harness's typed client, so every loser's answer is a `Failure` with its code.
use futures::future::join_all;
use testkit::client::{Failure, Outcome, Payment};

use crate::helpers::{TestApp, TestUser, positive};

/// The error codes of the failed outcomes, in order.
fn failure_codes<T>(outcomes: &[Outcome<T>]) -> Vec<&str> {
    outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .map(|failure| failure.code.as_str())
        .collect()
}

#[track_caller]
fn assert_failed_with<T: std::fmt::Debug>(outcome: &Outcome<T>, code: &str, message: &str) {
    match outcome {
        Err(Failure {
            code: found,
            message: said,
            retryable: false,
        }) if found == code && said == message => {}
        other => panic!("expected {code} \"{message}\", got {other:?}"),
    }
}

#[tokio::test]
async fn twenty_concurrent_ten_minute_requests_on_120_minutes_book_exactly_twelve() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
    let ann = app.register_user("ann").await;

    let outcomes =
        join_all((0..20).map(|_| app.api.request_visit(&ann.access_token, 10, None))).await;

    let booked = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(booked, 12, "{outcomes:?}");
    assert_eq!(failure_codes(&outcomes), vec!["INSUFFICIENT_MINUTES"; 8]);
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 120, 0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn ten_pals_completing_one_visit_at_once_pay_it_once() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
    let ann = app.register_user("ann").await;
    let mut pals = Vec::new();
    for index in 0..10 {
        pals.push(app.register_user(&format!("pal{index}")).await);
    }
    let visit_id = app.requested_visit(&ann.access_token, 60).await;

    let outcomes = join_all(
        pals.iter()
            .map(|pal| app.api.complete_visit(&pal.access_token, &visit_id)),
    )
    .await;

    let paid: Vec<&Payment> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .collect();
    assert_eq!(
        paid,
        vec![&Payment {
            minutes: 60,
            pal_credit: 51,
            fee: 9
        }],
        "{outcomes:?}"
    );
    // Not a lock timeout (that would be retryable): each loser saw the visit already completed.
    for lost in outcomes.iter().filter(|outcome| outcome.is_err()) {
        assert_failed_with(lost, "CONFLICT", "this visit is already completed");
    }
    let transactions: Vec<i64> = app.query_column("SELECT count(*) FROM transactions").await;
    assert_eq!(transactions, vec![1]);
    assert_eq!(app.minutes_of(&ann.access_token).await, (60, 0, 60));
    app.assert_invariants().await;
}

#[tokio::test]
async fn completions_racing_a_new_request_never_overcommit_the_member() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
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
            .map(|(pal, visit_id)| app.api.complete_visit(&pal.access_token, visit_id)),
    );
    let extra_request = app.api.request_visit(&ann.access_token, 20, None);
    let (completions, extra_request) = tokio::join!(completions, extra_request);

    assert!(completions.iter().all(Result::is_ok), "{completions:?}");
    assert_failed_with(
        &extra_request,
        "INSUFFICIENT_MINUTES",
        "not enough minutes: 20 requested, 0 available",
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (0, 0, 0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn crosswise_completions_in_parallel_never_fail_with_an_internal_error() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
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
                    .map(|visit_id| app.api.complete_visit(&token, visit_id)),
            )
            .await
        }
    };
    let (by_bob, by_ann) = tokio::join!(
        complete_all(&bob, &anns_visits),
        complete_all(&ann, &bobs_visits)
    );

    for outcome in by_bob.iter().chain(&by_ann) {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    // Each paid 60 and earned 6 x 9.
    assert_eq!(app.minutes_of(&ann.access_token).await, (114, 0, 114));
    assert_eq!(app.minutes_of(&bob.access_token).await, (114, 0, 114));
    app.assert_invariants().await;
}

#[tokio::test]
async fn simultaneous_retries_with_one_idempotency_key_book_one_visit() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
    let ann = app.register_user("ann").await;

    let outcomes = join_all((0..8).map(|_| {
        app.api
            .request_visit(&ann.access_token, 30, Some("tap-twice"))
    }))
    .await;

    let ids: std::collections::HashSet<&String> = outcomes
        .iter()
        .map(|outcome| {
            outcome
                .as_ref()
                .expect("every retry is answered with the visit")
        })
        .collect();
    assert_eq!(ids.len(), 1, "{outcomes:?}");
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 30, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_completion_racing_a_cancellation_leaves_exactly_one_outcome() {
    let app = TestApp::spawn_with(|config| config.database.pool_size = positive(20)).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut completed_visits = 0;
    for _ in 0..5 {
        let visit_id = app.requested_visit(&ann.access_token, 20).await;

        let (completed, cancelled) = tokio::join!(
            app.api.complete_visit(&bob.access_token, &visit_id),
            app.api.cancel_visit(&ann.access_token, &visit_id)
        );

        match (&completed, &cancelled) {
            (Ok(_), Err(_)) => {
                assert_failed_with(&cancelled, "CONFLICT", "this visit is already completed");
                completed_visits += 1;
            }
            (Err(_), Ok(())) => {
                assert_failed_with(&completed, "CONFLICT", "this visit was cancelled");
            }
            _ => panic!("exactly one must win: {completed:?} {cancelled:?}"),
        }
    }
    let left = 120 - 20 * completed_visits;
    assert_eq!(app.minutes_of(&ann.access_token).await, (left, 0, left));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_lock_held_too_long_gives_a_retryable_conflict_not_a_hang() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let app = TestApp::spawn_with(|config| {
        config.database.lock_timeout = std::time::Duration::from_millis(200)
    })
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
    let timed_out = app.api.complete_visit(&bob.access_token, &visit_id).await;

    match &timed_out {
        Err(failure) => assert_eq!(
            (failure.code.as_str(), failure.retryable),
            ("CONFLICT", true),
            "{failure:?}"
        ),
        Ok(paid) => panic!("paid through a held lock: {paid:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    blocker.rollback().await.expect("rollback");
    let retried = app.api.complete_visit(&bob.access_token, &visit_id).await;
    assert!(retried.is_ok(), "{retried:?}");
    app.assert_invariants().await;
}
