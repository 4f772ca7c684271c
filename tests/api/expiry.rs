//! Time in a visit's life (requested, accepted, expired): the clock is moved by writing past dates straight
//! into the database, as if the days had gone by.
use std::time::Duration;

use chrono::{Days, Utc};
use home_visits::visits::{self, Deadlines};
use sea_orm::ConnectionTrait;
use serde_json::json;
use testkit::eventually;

use crate::helpers::{TestApp, assert_error_code};

/// Moves a visit's date `days` into the past (0 = today).
async fn date_back(app: &TestApp, visit_id: &str, days: u64) {
    let date = Utc::now().date_naive() - Days::new(days);
    app.db
        .execute_unprepared(&format!(
            "UPDATE visits SET date = '{date}' WHERE id = '{visit_id}'"
        ))
        .await
        .expect("move the visit's date");
}

async fn ids_in(app: &TestApp, token: &str, filter: serde_json::Value) -> (Vec<String>, i64) {
    let page = app.visits(token, filter, Some(100), None).await;
    assert!(!page.has_errors(), "{page}");
    let ids = page["data"]["visits"]["edges"]
        .items()
        .map(|edge| edge["node"]["id"].str().to_string())
        .collect();
    (ids, page["data"]["visits"]["totalCount"].int())
}

async fn available(app: &TestApp, token: &str) -> (i64, i64) {
    let (_, outstanding, available) = app.minutes_of(token).await;
    (outstanding, available)
}

#[tokio::test]
async fn a_request_whose_date_passed_leaves_the_open_list_but_can_be_completed_in_its_grace_days() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let yesterdays = app.requested_visit(&ann.access_token, 30).await;
    let other = app.requested_visit(&ann.access_token, 20).await;
    assert_eq!(
        ids_in(&app, &bob.access_token, json!({ "role": "OPEN" }))
            .await
            .1,
        2
    );

    date_back(&app, &yesterdays, 1).await;

    let (open, open_count) = ids_in(&app, &bob.access_token, json!({ "role": "OPEN" })).await;
    assert_eq!(open, vec![other.clone()], "pals cannot claim the past");
    assert_eq!(open_count, 1);
    let (everything, _) = ids_in(&app, &cy.access_token, json!(null)).await;
    assert_eq!(everything, vec![other.clone()]);
    assert_error_code(
        &app.accept_visit(&bob.access_token, &yesterdays).await,
        "CONFLICT",
    );
    // Still the member's, still holding their minutes, still REQUESTED.
    let mine = app.visit(&ann.access_token, &yesterdays).await;
    assert_eq!(mine["data"]["visit"]["status"], "REQUESTED", "{mine}");
    assert_eq!(available(&app, &ann.access_token).await, (50, 70));

    // The pal who did it yesterday still completes it (an implicit accept).
    let done = app.complete_visit(&bob.access_token, &yesterdays).await;
    assert!(!done.has_errors(), "{done}");
    assert_eq!(
        done["data"]["completeVisit"]["visit"]["status"],
        "COMPLETED"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn after_its_grace_days_a_visit_is_expired_everywhere_and_holds_no_minutes() {
    let app = TestApp::spawn_with(|config| config.visits.completion_grace_days = 2).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let requested = app.requested_visit(&ann.access_token, 70).await;
    let accepted = app.requested_visit(&ann.access_token, 40).await;
    assert!(
        !app.accept_visit(&bob.access_token, &accepted)
            .await
            .has_errors()
    );
    assert_error_code(
        &app.request_visit(&ann.access_token, 20).await,
        "INSUFFICIENT_MINUTES",
    );

    // Two days back is the last day of grace; three is past it.
    date_back(&app, &requested, 2).await;
    date_back(&app, &accepted, 2).await;
    assert_eq!(available(&app, &ann.access_token).await, (110, 10));
    date_back(&app, &requested, 3).await;
    date_back(&app, &accepted, 3).await;

    // Read as expired before any sweeper ran: the stored status is still the old one.
    let stored: Vec<String> = app
        .query_column("SELECT status FROM visits ORDER BY minutes")
        .await;
    assert_eq!(stored, ["ACCEPTED", "REQUESTED"]);
    for id in [&requested, &accepted] {
        let seen = app.visit(&ann.access_token, id).await;
        assert_eq!(seen["data"]["visit"]["status"], "EXPIRED", "{seen}");
    }
    let pals_view = app.visit(&bob.access_token, &accepted).await;
    assert_eq!(pals_view["data"]["visit"]["status"], "EXPIRED");
    assert_eq!(available(&app, &ann.access_token).await, (0, 120));
    let (expired, expired_count) = ids_in(
        &app,
        &ann.access_token,
        json!({ "role": "MEMBER", "status": "EXPIRED" }),
    )
    .await;
    assert_eq!(expired.len(), 2);
    assert_eq!(expired_count, 2);
    let (pal_expired, _) = ids_in(&app, &bob.access_token, json!({ "status": "EXPIRED" })).await;
    assert_eq!(pal_expired, vec![accepted.clone()]);
    for status in ["REQUESTED", "ACCEPTED"] {
        let (none, count) = ids_in(&app, &ann.access_token, json!({ "status": status })).await;
        assert!(none.is_empty() && count == 0, "{status}: {none:?}");
    }

    // Nothing more can happen to them, and their minutes are free for a new request.
    assert_error_code(
        &app.complete_visit(&bob.access_token, &accepted).await,
        "CONFLICT",
    );
    assert_error_code(
        &app.cancel_visit(&ann.access_token, &requested).await,
        "CONFLICT",
    );
    assert_error_code(&app.visit(&bob.access_token, &requested).await, "NOT_FOUND");
    let again = app.request_visit(&ann.access_token, 120).await;
    assert!(!again.has_errors(), "{again}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_sweeper_writes_expired_and_records_each_expiry_once_however_many_instances_sweep() {
    let app = TestApp::spawn_with(|config| {
        config.visits.starting_minutes = 1_000;
        config.visits.expiry_sweep_interval = Duration::from_millis(200);
    })
    .await;
    let sibling = app
        .spawn_sibling_with(|config| {
            config.visits.expiry_sweep_interval = Duration::from_millis(200)
        })
        .await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut past = Vec::new();
    for _ in 0..12 {
        let id = app.requested_visit(&ann.access_token, 10).await;
        date_back(&app, &id, 5).await;
        past.push(id);
    }
    let accepted = app.requested_visit(&ann.access_token, 10).await;
    assert!(
        !app.accept_visit(&bob.access_token, &accepted)
            .await
            .has_errors()
    );
    date_back(&app, &accepted, 3).await;
    let in_grace = app.requested_visit(&ann.access_token, 10).await;
    date_back(&app, &in_grace, 1).await;
    let completed = app.requested_visit(&ann.access_token, 10).await;
    assert!(
        !app.complete_visit(&bob.access_token, &completed)
            .await
            .has_errors()
    );
    date_back(&app, &completed, 9).await;

    eventually(
        Duration::from_secs(10),
        "the sweeper expires the 13 due visits",
        || async {
            let stored = app
                .query_column::<String>("SELECT status FROM visits WHERE status = 'EXPIRED'")
                .await;
            (stored.len() == 13).then_some(())
        },
    )
    .await;
    let statuses: Vec<String> = app
        .query_column(&format!(
            "SELECT status FROM visits WHERE id IN ('{in_grace}', '{completed}') ORDER BY minutes, status"
        ))
        .await;
    assert_eq!(statuses, ["COMPLETED", "REQUESTED"]);

    let expiries: Vec<_> = app
        .recorded_events()
        .await
        .into_iter()
        .filter(|event| event.event_type == "visit.expired")
        .collect();
    assert_eq!(expiries.len(), 13, "one event per visit, whoever swept");
    let of_accepted = expiries
        .iter()
        .find(|event| event.aggregate_id == accepted)
        .expect("the accepted visit's expiry");
    let date = (Utc::now().date_naive() - Days::new(3)).to_string();
    assert_eq!(
        of_accepted.payload,
        json!({
            "visitId": accepted,
            "memberId": ann.id,
            "palId": bob.id,
            "date": date,
            "minutes": 10,
            "status": "EXPIRED",
            "previousStatus": "ACCEPTED",
        })
    );
    assert_eq!(
        of_accepted.aggregate_version, 3,
        "requested, accepted, expired"
    );

    // The member hears of it, once per visit, from the event alone.
    app.settled().await;
    let told: Vec<i64> = app
        .query_column(&format!(
            "SELECT count(*) FROM notifications WHERE kind = 'VISIT_EXPIRED' AND recipient_id = '{}'",
            ann.id
        ))
        .await;
    assert_eq!(told, [13]);

    // Nothing is left for a sweep to do.
    let deadlines = Deadlines::now(2);
    assert_eq!(
        visits::expire_due(&app.db, &deadlines, 100)
            .await
            .expect("sweep"),
        0
    );
    drop(sibling);
    app.assert_invariants().await;
}

#[tokio::test]
async fn live_subscribers_see_a_visit_expire() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let mut live = testkit::live::LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    live.subscribe_confirmed(
        "mine",
        "subscription { myVisits { type visit { id status } } }",
        json!({}),
    )
    .await
    .expect("subscribed");
    // Subscribed before the request, so the stream holds exactly its two changes, in order.
    let visit = app.requested_visit(&ann.access_token, 30).await;
    let requested = live.payloads("mine", 1, Duration::from_secs(10)).await;
    assert_eq!(
        requested.first().expect("the request")["data"]["myVisits"]["type"],
        "REQUESTED"
    );
    date_back(&app, &visit, 5).await;

    assert_eq!(
        visits::expire_due(&app.db, &Deadlines::now(2), 100)
            .await
            .expect("sweep"),
        1
    );

    let updates = live.payloads("mine", 1, Duration::from_secs(10)).await;
    let update = &updates.first().expect("an update")["data"]["myVisits"];
    assert_eq!(update["type"], "EXPIRED", "{update}");
    assert_eq!(update["visit"]["id"], visit.as_str(), "{update}");
    assert_eq!(update["visit"]["status"], "EXPIRED", "{update}");
}

/// Instances whose clocks straddle a deadline: one still completes what another already sweeps.
/// Each visit must end either completed and paid or expired and unpaid, never both, and the log
/// must say which.
#[tokio::test]
async fn a_completion_and_the_sweeper_racing_on_one_visit_never_both_win() {
    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 10_000).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(app.requested_visit(&ann.access_token, 10).await);
    }
    // A sweeper whose "today" is a week ahead: to it every one of these visits is long expired.
    let ahead = Deadlines::on(Utc::now().date_naive() + Days::new(7), 2);
    let sweeping = async {
        let mut expired = 0;
        for _ in 0..40 {
            expired += visits::expire_due(&app.db, &ahead, 3).await.expect("sweep");
            tokio::task::yield_now().await;
        }
        expired
    };
    let completing = futures::future::join_all(
        ids.iter()
            .map(|id| app.complete_visit(&bob.access_token, id)),
    );
    let (expired, answers) = tokio::join!(sweeping, completing);

    let completed = answers.iter().filter(|answer| !answer.has_errors()).count();
    for answer in answers.iter().filter(|answer| answer.has_errors()) {
        assert_error_code(answer, "CONFLICT");
    }
    assert_eq!(
        completed + expired,
        ids.len(),
        "{completed} completed, {expired} expired"
    );
    let paid: Vec<i64> = app.query_column("SELECT count(*) FROM transactions").await;
    assert_eq!(paid, [completed as i64]);
    let events = app.recorded_types().await;
    let count = |kind: &str| events.iter().filter(|event| *event == kind).count();
    assert_eq!(count("visit.completed"), completed);
    assert_eq!(count("visit.expired"), expired);
    app.assert_invariants().await;
}
