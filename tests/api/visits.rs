use serde_json::json;
use testkit::reply::Reply;

use crate::helpers::{PASSWORD, TestApp, assert_error_code, tomorrow};

fn field_errors(response: &Reply) -> &Reply {
    &response["errors"][0]["extensions"]["fields"]
}

#[tokio::test]
async fn a_requested_visit_holds_its_minutes_and_keeps_its_tasks_in_order() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;

    let response = app
        .request_visit_with(
            &ann.access_token,
            json!({ "date": tomorrow(), "minutes": 30, "tasks": [
                { "name": " Groceries ", "description": "Milk and bread" },
                { "name": "Walk the dog" },
            ]}),
        )
        .await;

    let visit = &response["data"]["requestVisit"];
    assert_eq!(visit["status"], "REQUESTED", "{response}");
    assert_eq!(visit["date"], tomorrow().as_str());
    assert_eq!(
        visit["tasks"],
        json!([{ "name": "Groceries", "description": "Milk and bread" }, { "name": "Walk the dog", "description": null }])
    );
    assert_eq!(visit["member"]["email"], ann.email.as_str());
    assert!(visit["pal"].is_null());
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 30, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_request_beyond_the_available_minutes_is_refused() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    app.requested_visit(&ann.access_token, 100).await;

    let response = app.request_visit(&ann.access_token, 30).await;

    assert_error_code(&response, "INSUFFICIENT_MINUTES");
    assert_eq!(response["errors"][0]["extensions"]["available"], 20);
    let exactly_what_is_left = app.request_visit(&ann.access_token, 20).await;
    assert_eq!(
        exactly_what_is_left["data"]["requestVisit"]["minutes"], 20,
        "{exactly_what_is_left}"
    );
    assert_eq!(
        exactly_what_is_left["data"]["requestVisit"]["status"],
        "REQUESTED"
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 120, 0));
    app.assert_invariants().await;
}

#[tokio::test]
async fn invalid_requests_name_the_fields_at_fault() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let yesterday = (chrono::Utc::now().date_naive() - chrono::Days::new(1)).to_string();
    let task = json!({ "name": "Tea" });

    let cases = [
        (
            json!({ "date": yesterday, "minutes": 30, "tasks": [task] }),
            "date",
            "must be today or later (UTC)",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 0, "tasks": [task] }),
            "minutes",
            "must be 1 to 480",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 481, "tasks": [task] }),
            "minutes",
            "must be 1 to 480",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 30, "tasks": [] }),
            "tasks",
            "must list 1 to 20 tasks",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 30, "tasks": vec![task.clone(); 21] }),
            "tasks",
            "must list 1 to 20 tasks",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 30, "tasks": [{ "name": "  " }] }),
            "tasks.0.name",
            "must be 1 to 100 characters",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 30, "tasks": [task, { "name": "x", "description": "d".repeat(1001) }] }),
            "tasks.1.description",
            "must be at most 1000 characters",
        ),
        (
            json!({ "date": tomorrow(), "minutes": 30, "tasks": [task], "idempotencyKey": "" }),
            "idempotencyKey",
            "must be 1 to 100 characters",
        ),
    ];
    for (input, field, message) in cases {
        let response = app.request_visit_with(&ann.access_token, input).await;
        assert_error_code(&response, "BAD_USER_INPUT");
        assert_eq!(
            field_errors(&response),
            &json!({ field: [message] }),
            "{response}"
        );
    }
    let malformed_date = app
        .request_visit_with(
            &ann.access_token,
            json!({ "date": "2026-13-45", "minutes": 30, "tasks": [task] }),
        )
        .await;
    assert_error_code(&malformed_date, "BAD_USER_INPUT");
    let message = malformed_date["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("expected a date as YYYY-MM-DD"),
        "{malformed_date}"
    );
    let visits: Vec<i64> = app.query_column("SELECT count(*) FROM visits").await;
    assert_eq!(visits, vec![0]);
}

#[tokio::test]
async fn completing_a_visit_debits_the_member_credits_the_pal_and_records_the_fee() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 33).await;

    let response = app.complete_visit(&bob.access_token, &visit_id).await;

    let transaction = &response["data"]["completeVisit"];
    assert_eq!(
        (
            transaction["minutes"].int(),
            transaction["palCredit"].int(),
            transaction["fee"].int()
        ),
        (33, 28, 5),
        "{response}"
    );
    assert_eq!(transaction["visit"]["status"], "COMPLETED");
    assert_eq!(
        transaction["pal"]["minutes"], 148,
        "the pal sees their new balance"
    );
    assert!(transaction["member"]["minutes"].is_null() && transaction["member"]["email"].is_null());
    assert_eq!(app.minutes_of(&ann.access_token).await, (87, 0, 87));
    assert_eq!(app.minutes_of(&bob.access_token).await, (148, 0, 148));
    let fees: Vec<i32> = app.query_column("SELECT fee FROM transactions").await;
    assert_eq!(fees, vec![5]);
    app.assert_invariants().await;
}

#[tokio::test]
async fn once_a_pal_accepts_only_they_can_complete() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let visit_id = app.requested_visit(&ann.access_token, 35).await;

    let accepted = app.accept_visit(&bob.access_token, &visit_id).await;
    assert_eq!(
        accepted["data"]["acceptVisit"]["status"], "ACCEPTED",
        "{accepted}"
    );
    assert_eq!(
        accepted["data"]["acceptVisit"]["pal"]["id"],
        bob.id.as_str()
    );

    assert_error_code(
        &app.accept_visit(&cy.access_token, &visit_id).await,
        "CONFLICT",
    );
    assert_error_code(
        &app.complete_visit(&cy.access_token, &visit_id).await,
        "FORBIDDEN",
    );
    let again = app.accept_visit(&bob.access_token, &visit_id).await;
    assert_eq!(
        again["data"]["acceptVisit"]["status"], "ACCEPTED",
        "a retried accept is answered"
    );
    let completed = app.complete_visit(&bob.access_token, &visit_id).await;
    assert_eq!(
        completed["data"]["completeVisit"]["palCredit"], 30,
        "{completed}"
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn members_cannot_accept_or_complete_their_own_visits() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let visit_id = app.requested_visit(&ann.access_token, 30).await;

    assert_error_code(
        &app.accept_visit(&ann.access_token, &visit_id).await,
        "FORBIDDEN",
    );
    assert_error_code(
        &app.complete_visit(&ann.access_token, &visit_id).await,
        "FORBIDDEN",
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 30, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_visit_is_completed_at_most_once() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 30).await;
    let first = app.complete_visit(&bob.access_token, &visit_id).await;
    assert_eq!(first.error_code(), None, "{first}");

    let again = app.complete_visit(&bob.access_token, &visit_id).await;

    assert_error_code(&again, "CONFLICT");
    assert_error_code(
        &app.cancel_visit(&ann.access_token, &visit_id).await,
        "CONFLICT",
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (90, 0, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancelling_frees_the_minutes_and_ends_the_visit() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 120).await;

    assert_error_code(
        &app.cancel_visit(&bob.access_token, &visit_id).await,
        "FORBIDDEN",
    );
    let cancelled = app.cancel_visit(&ann.access_token, &visit_id).await;

    assert_eq!(
        cancelled["data"]["cancelVisit"]["status"], "CANCELLED",
        "{cancelled}"
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 0, 120));
    assert_error_code(
        &app.cancel_visit(&ann.access_token, &visit_id).await,
        "CONFLICT",
    );
    assert_error_code(
        &app.complete_visit(&bob.access_token, &visit_id).await,
        "CONFLICT",
    );
    assert_error_code(
        &app.accept_visit(&bob.access_token, &visit_id).await,
        "CONFLICT",
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_accepted_visit_can_still_be_cancelled_by_its_member() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 60).await;
    let accepted = app.accept_visit(&bob.access_token, &visit_id).await;
    assert_eq!(
        accepted["data"]["acceptVisit"]["status"], "ACCEPTED",
        "{accepted}"
    );

    let cancelled = app.cancel_visit(&ann.access_token, &visit_id).await;

    assert_eq!(
        cancelled["data"]["cancelVisit"]["status"], "CANCELLED",
        "{cancelled}"
    );
    assert_error_code(
        &app.complete_visit(&bob.access_token, &visit_id).await,
        "CONFLICT",
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn people_only_see_their_own_visits_and_open_requests() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let open = app.requested_visit(&ann.access_token, 10).await;
    let taken = app.requested_visit(&ann.access_token, 20).await;
    app.accept_visit(&bob.access_token, &taken).await;

    let seen_by_cy = app.visit(&cy.access_token, &open).await;
    assert_eq!(
        seen_by_cy["data"]["visit"]["id"],
        open.as_str(),
        "{seen_by_cy}"
    );
    assert!(
        seen_by_cy["data"]["visit"]["member"]["email"].is_null(),
        "no one else's email"
    );
    assert_error_code(&app.visit(&cy.access_token, &taken).await, "NOT_FOUND");
    assert_error_code(
        &app.cancel_visit(&cy.access_token, &taken).await,
        "NOT_FOUND",
    );
    assert_eq!(
        app.visit(&bob.access_token, &taken).await["data"]["visit"]["pal"]["email"],
        bob.email.as_str()
    );

    let total = |response: Reply| response["data"]["visits"]["totalCount"].as_i64();
    assert_eq!(
        total(
            app.visits(&ann.access_token, json!({ "role": "MEMBER" }), None, None)
                .await
        ),
        Some(2)
    );
    assert_eq!(
        total(
            app.visits(&ann.access_token, json!({ "role": "OPEN" }), None, None)
                .await
        ),
        Some(0)
    );
    assert_eq!(
        total(
            app.visits(&bob.access_token, json!({ "role": "PAL" }), None, None)
                .await
        ),
        Some(1)
    );
    assert_eq!(
        total(
            app.visits(&bob.access_token, json!({ "role": "OPEN" }), None, None)
                .await
        ),
        Some(1)
    );
    assert_eq!(
        total(app.visits(&cy.access_token, json!(null), None, None).await),
        Some(1)
    );
    assert_eq!(
        total(
            app.visits(
                &ann.access_token,
                json!({ "status": "ACCEPTED" }),
                None,
                None
            )
            .await
        ),
        Some(1)
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn visits_page_by_date_then_id_with_a_total_count() {
    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 1_000).await;
    let ann = app.register_user("ann").await;
    let today = chrono::Utc::now().date_naive();
    for days in [3, 1, 2, 1, 0] {
        let date = (today + chrono::Days::new(days)).to_string();
        let response = app
            .request_visit_with(
                &ann.access_token,
                json!({ "date": date, "minutes": 10, "tasks": [{ "name": "Tea" }] }),
            )
            .await;
        assert!(response["data"]["requestVisit"].is_object(), "{response}");
    }

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .visits(
                &ann.access_token,
                json!({ "role": "MEMBER" }),
                Some(2),
                after.as_deref(),
            )
            .await;
        let connection = &page["data"]["visits"];
        assert_eq!(connection["totalCount"], 5, "{page}");
        let edges = connection["edges"].items();
        page_sizes.push(edges.len());
        for edge in edges {
            seen.push(edge["node"]["date"].str().to_string());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
    }

    let expected: Vec<String> = [0, 1, 1, 2, 3]
        .map(|days| (today + chrono::Days::new(days)).to_string())
        .to_vec();
    assert_eq!(page_sizes, vec![2, 2, 1]);
    assert_eq!(seen, expected);
    let too_big = app
        .visits(&ann.access_token, json!(null), Some(101), None)
        .await;
    assert_error_code(&too_big, "BAD_USER_INPUT");
    assert_eq!(
        too_big["errors"][0]["extensions"]["fields"],
        json!({ "first": ["must be 1 to 100"] })
    );
    let bogus_cursor = app
        .visits(&ann.access_token, json!(null), None, Some("bogus"))
        .await;
    assert_error_code(&bogus_cursor, "BAD_USER_INPUT");
    assert_eq!(
        bogus_cursor["errors"][0]["extensions"]["fields"],
        json!({ "after": ["is not a cursor from this API"] })
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_books_nothing_twice() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let input = json!({ "date": tomorrow(), "minutes": 40, "tasks": [{ "name": "Tea" }], "idempotencyKey": "phone-1" });

    let first = app
        .request_visit_with(&ann.access_token, input.clone())
        .await;
    let retry = app
        .request_visit_with(&ann.access_token, input.clone())
        .await;

    assert_eq!(
        first["data"]["requestVisit"]["id"], retry["data"]["requestVisit"]["id"],
        "{retry}"
    );
    assert_eq!(app.minutes_of(&ann.access_token).await, (120, 40, 80));
    let mut changed = input;
    changed["minutes"] = json!(50);
    assert_error_code(
        &app.request_visit_with(&ann.access_token, changed).await,
        "CONFLICT",
    );
    let other = app.register_user("bob").await;
    let same_key_other_member = app
        .request_visit_with(
            &other.access_token,
            json!({ "date": tomorrow(), "minutes": 40, "tasks": [{ "name": "Tea" }], "idempotencyKey": "phone-1" }),
        )
        .await;
    // Keys are per member: Bob's "phone-1" is a visit of his own.
    let bobs = &same_key_other_member["data"]["requestVisit"];
    assert_eq!(
        bobs["member"]["email"],
        other.email.as_str(),
        "{same_key_other_member}"
    );
    assert_ne!(bobs["id"], first["data"]["requestVisit"]["id"]);
    app.assert_invariants().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_told_apart() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;

    assert_error_code(
        &app.visit(&ann.access_token, &uuid::Uuid::new_v4().to_string())
            .await,
        "NOT_FOUND",
    );
    assert_error_code(
        &app.complete_visit(&ann.access_token, &uuid::Uuid::new_v4().to_string())
            .await,
        "NOT_FOUND",
    );
    assert_error_code(
        &app.accept_visit(&ann.access_token, "not-an-id").await,
        "BAD_USER_INPUT",
    );
}

#[tokio::test]
async fn visits_need_a_signed_in_user() {
    let app = TestApp::spawn().await;

    let response = app
        .graphql(
            None,
            "mutation { requestVisit(input: {date: \"2099-01-01\", minutes: 10, tasks: [{name: \"x\"}]}) { id } }",
            json!({}),
        )
        .await;

    assert_error_code(&response, "UNAUTHENTICATED");
}

#[tokio::test]
async fn both_parties_see_the_transaction_in_their_ledger_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    for minutes in [10, 20, 30] {
        let visit_id = app.requested_visit(&ann.access_token, minutes).await;
        app.complete_visit(&bob.access_token, &visit_id).await;
    }

    let first_page = app.transactions(&ann.access_token, Some(2), None).await;
    let connection = &first_page["data"]["transactions"];
    assert_eq!(connection["totalCount"], 3, "{first_page}");
    assert_eq!(connection["edges"].as_array().map(Vec::len), Some(2));
    assert_eq!(connection["pageInfo"]["hasNextPage"], true);
    let cursor = connection["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor");
    let second_page = app
        .transactions(&ann.access_token, Some(2), Some(cursor))
        .await;
    let last = &second_page["data"]["transactions"]["edges"];
    assert_eq!(last.as_array().map(Vec::len), Some(1), "{second_page}");
    assert_eq!(last[0]["node"]["minutes"], 10, "newest first");
    assert_eq!(
        app.transactions(&bob.access_token, None, None).await["data"]["transactions"]["totalCount"],
        3
    );
    assert_eq!(
        app.transactions(&cy.access_token, None, None).await["data"]["transactions"]["totalCount"],
        0
    );
    app.assert_invariants().await;
}

#[tokio::test]
async fn deleting_an_account_cancels_its_requests_and_reopens_the_visits_it_accepted() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let anns_visit = app.requested_visit(&ann.access_token, 30).await;
    let bobs_visit = app.requested_visit(&bob.access_token, 30).await;
    app.accept_visit(&ann.access_token, &bobs_visit).await;

    let deleted = app.delete_account(&ann.access_token, PASSWORD).await;
    assert_eq!(deleted["data"]["deleteAccount"], true, "{deleted}");

    let statuses: Vec<String> = app
        .query_column(&format!(
            "SELECT status FROM visits WHERE id IN ('{anns_visit}', '{bobs_visit}') ORDER BY id = '{anns_visit}' DESC"
        ))
        .await;
    assert_eq!(
        statuses,
        vec!["CANCELLED".to_string(), "REQUESTED".to_string()]
    );
    assert_eq!(app.minutes_of(&bob.access_token).await, (120, 30, 90));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_page_of_visits_costs_the_same_few_statements_whatever_its_size() {
    use std::sync::atomic::Ordering;

    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 10_000).await;
    let ann = app.register_user("ann").await;
    let page_cost = |first: i32| {
        let app = &app;
        let token = ann.access_token.clone();
        async move {
            let before = app.statements.load(Ordering::SeqCst);
            let response = app
                .visits(&token, json!({ "role": "MEMBER" }), Some(first), None)
                .await;
            let cost = app.statements.load(Ordering::SeqCst) - before;
            let connection = &response["data"]["visits"];
            assert_eq!(connection["totalCount"], 30, "{response}");
            let edges = connection["edges"].as_array().map(Vec::len);
            assert_eq!(
                edges,
                Some(usize::try_from(first).unwrap_or(0)),
                "{response}"
            );
            let tasks = connection["edges"][0]["node"]["tasks"]
                .as_array()
                .map(Vec::len);
            assert_eq!(tasks, Some(2), "{response}");
            cost
        }
    };
    for _ in 0..30 {
        let booked = app
            .request_visit_with(
                &ann.access_token,
                json!({ "date": tomorrow(), "minutes": 10, "tasks": [{ "name": "Tea" }, { "name": "Talk" }] }),
            )
            .await;
        assert_eq!(booked.error_code(), None, "{booked}");
    }

    let small = page_cost(2).await;
    let large = page_cost(30).await;

    // Session check (when not cached), count, page, tasks of the page, users of the page.
    assert!(large <= 5, "a 30-visit page took {large} statements");
    assert_eq!(
        small, large,
        "statements grew with the page: {small} for 2 visits, {large} for 30"
    );
}
