//! What a request may cost: complexity that weighs a connection by its page size and a count by
//! the count it runs, caps on aliases and on a batch's operations, all decided before any SQL;
//! the codes of documents that do not parse or validate; pages that stay index ranges.
use std::sync::atomic::Ordering;

use reqwest::header;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error_code, positive};

fn aliased(count: usize, field: &str) -> String {
    let fields: Vec<String> = (0..count).map(|n| format!("a{n}: {field}")).collect();
    format!("{{ {} }}", fields.join(" "))
}

/// Statements the app sent for what `send` does.
async fn statements_for<F: std::future::Future<Output = T>, T>(
    app: &TestApp,
    send: F,
) -> (T, usize) {
    let before = app.statements.load(Ordering::SeqCst);
    let answer = send.await;
    (answer, app.statements.load(Ordering::SeqCst) - before)
}

#[tokio::test]
async fn over_budget_documents_are_refused_before_any_sql_runs() {
    // Aliases allowed without limit here, so the complexity model alone must refuse the first.
    let app = TestApp::spawn_with(|config| config.graphql.max_aliases = 10_000).await;
    let ann = app.register_user("ann").await;
    let token = Some(ann.access_token.as_str());

    let counts = aliased(300, "visits(first: 100) { totalCount }");
    let (refused, statements) = statements_for(&app, app.graphql(token, &counts, json!({}))).await;
    assert_error_code(&refused, "QUERY_TOO_COMPLEX");
    assert_eq!(statements, 0, "the database saw nothing of {refused}");

    // A page costs `first` times a row: ten full pages are over the default budget of 5,000...
    let page = "visits(first: 100) { edges { cursor node { id date minutes status } } }";
    let (refused, statements) =
        statements_for(&app, app.graphql(token, &aliased(10, page), json!({}))).await;
    assert_error_code(&refused, "QUERY_TOO_COMPLEX");
    assert_eq!(statements, 0);
    // ...one is not, and it runs (this is the check's positive control: statements are seen).
    let (allowed, statements) = statements_for(
        &app,
        app.graphql(token, &format!("{{ {page} }}"), json!({})),
    )
    .await;
    assert!(!allowed.has_errors(), "{allowed}");
    assert!(statements > 0, "a query that runs is seen");
    // The same rows in pages of 5 cost a twentieth.
    let small = "visits(first: 5) { edges { cursor node { id date minutes status } } }";
    let allowed = app.graphql(token, &aliased(10, small), json!({})).await;
    assert!(!allowed.has_errors(), "{allowed}");
}

#[tokio::test]
async fn too_many_aliases_are_refused_before_any_sql_runs() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let token = Some(ann.access_token.as_str());

    let (refused, statements) = statements_for(
        &app,
        app.graphql(token, &aliased(500, "me { id }"), json!({})),
    )
    .await;
    assert_error_code(&refused, "QUERY_TOO_COMPLEX");
    assert_eq!(statements, 0);
    assert!(
        refused["errors"][0]["message"]
            .str()
            .contains("500 aliased fields")
    );

    // Hidden in a fragment spread under many aliases: counted where it is spread.
    let fragment = format!(
        "{} fragment F on User {{ {} }}",
        aliased(10, "me { ...F }"),
        (0..10)
            .map(|n| format!("f{n}: id"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let refused = app.graphql(token, &fragment, json!({})).await;
    assert_error_code(&refused, "QUERY_TOO_COMPLEX");

    let within = app
        .graphql(token, &aliased(30, "me { id }"), json!({}))
        .await;
    assert!(!within.has_errors(), "{within}");
}

#[tokio::test]
async fn a_total_count_is_counted_only_when_selected() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    app.requested_visit(&ann.access_token, 10).await;
    let token = Some(ann.access_token.as_str());
    let page = |extra: &str| {
        format!("{{ visits(filter: {{ role: MEMBER }}) {{ {extra} edges {{ node {{ id }} }} }} }}")
    };

    let (_, without) = statements_for(&app, app.graphql(token, &page(""), json!({}))).await;
    let (counted, with) =
        statements_for(&app, app.graphql(token, &page("totalCount"), json!({}))).await;
    let (_, twice) = statements_for(
        &app,
        app.graphql(token, &page("totalCount again: totalCount"), json!({})),
    )
    .await;

    assert_eq!(counted["data"]["visits"]["totalCount"], 1);
    assert_eq!(
        with,
        without + 1,
        "one COUNT when asked for, none otherwise"
    );
    assert_eq!(twice, with, "an aliased second totalCount reuses the count");
}

#[tokio::test]
async fn a_batch_runs_each_operation_as_its_own_request_up_to_the_cap() {
    let app = TestApp::spawn_with(|config| {
        config.graphql.max_batch_operations = positive(4);
        config.auth.login_attempts_per_address_per_minute = positive(3);
    })
    .await;
    let ann = app.register_user("ann").await;
    let url = format!("{}/graphql", app.address);
    let post = |body: Value| {
        app.http
            .post(&url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", ann.access_token),
            )
            .json(&body)
            .send()
    };

    let answers: Value = post(json!([
        { "query": "{ me { firstName } }" },
        { "query": "{ nope }" },
    ]))
    .await
    .expect("sent")
    .json()
    .await
    .expect("JSON");
    assert_eq!(answers[0]["data"]["me"]["firstName"], "ann", "{answers}");
    assert_eq!(
        answers[1]["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{answers}"
    );

    let before = app.statements.load(Ordering::SeqCst);
    let too_long = post(Value::Array(vec![json!({ "query": "{ me { id } }" }); 5]))
        .await
        .expect("sent");
    assert_eq!(too_long.status(), 400);
    let refused: Value = too_long.json().await.expect("JSON");
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "QUERY_TOO_COMPLEX"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("1 to 4 operations")),
        "{refused}"
    );
    assert_eq!(
        app.statements.load(Ordering::SeqCst),
        before,
        "refused whole"
    );

    // The address throttle counts every login in a batch, not the batch once.
    let login = json!({
        "query": "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
        "variables": { "input": { "email": "ann@example.com", "password": "wrong password" } },
    });
    let answers: Value = post(Value::Array(vec![login.clone(); 4]))
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let codes: Vec<&str> = (0..4)
        .map(|n| {
            answers[n]["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("-")
        })
        .collect();
    assert_eq!(
        codes,
        [
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "RATE_LIMITED"
        ]
    );
}

#[tokio::test]
async fn documents_that_do_not_parse_or_validate_get_their_own_codes() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let token = Some(ann.access_token.as_str());
    let cases = [
        ("{ me { id ", "GRAPHQL_PARSE_FAILED"),
        ("{ me { shoeSize } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "query { visits(colour: RED) { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "query { visits(first: \"ten\") { totalCount } }",
            "BAD_USER_INPUT",
        ),
        (
            "query { visits(filter: { role: BOSS }) { totalCount } }",
            "BAD_USER_INPUT",
        ),
    ];
    for (document, code) in cases {
        let answer = app.graphql(token, document, json!({})).await;
        assert_eq!(answer.error_code(), Some(code), "{document}: {answer}");
    }
    let wrong_variable = app
        .graphql(
            token,
            "query($first: Int) { visits(first: $first) { totalCount } }",
            json!({ "first": "ten" }),
        )
        .await;
    assert_error_code(&wrong_variable, "BAD_USER_INPUT");
}

#[tokio::test]
async fn bad_page_arguments_are_bad_user_input_and_the_end_is_an_empty_page() {
    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 1_000).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    for _ in 0..3 {
        app.requested_visit(&ann.access_token, 10).await;
    }
    for first in [0, -1, 101] {
        let answer = app
            .visits(&ann.access_token, json!(null), Some(first), None)
            .await;
        assert_error_code(&answer, "BAD_USER_INPUT");
        assert_eq!(
            answer["errors"][0]["extensions"]["fields"],
            json!({ "first": ["must be 1 to 100"] })
        );
    }

    let mine = app
        .visits(
            &ann.access_token,
            json!({ "role": "MEMBER" }),
            Some(1),
            None,
        )
        .await;
    let cursor = mine["data"]["visits"]["pageInfo"]["endCursor"]
        .str()
        .to_string();
    let elsewhere = app
        .visits(
            &bob.access_token,
            json!({ "role": "OPEN" }),
            Some(1),
            Some(&cursor),
        )
        .await;
    assert_error_code(&elsewhere, "BAD_USER_INPUT");
    assert!(
        elsewhere["errors"][0]["extensions"]["fields"]["after"][0]
            .str()
            .contains("another list or filter"),
        "{elsewhere}"
    );
    use base64::Engine;
    let forged = [
        "bogus".to_string(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("visits:member:any|x|y"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("|||"),
    ];
    for cursor in forged {
        let answer = app
            .visits(
                &ann.access_token,
                json!({ "role": "MEMBER" }),
                None,
                Some(&cursor),
            )
            .await;
        assert_error_code(&answer, "BAD_USER_INPUT");
    }

    // The last page's endCursor is a place to wait at, not an error: new visits show up after it.
    let everything = app
        .visits(
            &ann.access_token,
            json!({ "role": "MEMBER" }),
            Some(100),
            None,
        )
        .await;
    let last = everything["data"]["visits"]["pageInfo"]["endCursor"]
        .str()
        .to_string();
    let beyond = app
        .visits(
            &ann.access_token,
            json!({ "role": "MEMBER" }),
            Some(100),
            Some(&last),
        )
        .await;
    assert!(!beyond.has_errors(), "{beyond}");
    assert_eq!(beyond["data"]["visits"]["edges"].items().count(), 0);
    assert_eq!(beyond["data"]["visits"]["pageInfo"]["hasNextPage"], false);
}

/// Every list query the service sends reads an index, not the table: each statement it ran for a
/// page and a count is explained with sequential scans priced out, and the plan must still name
/// one of the visit indexes (on a table this small PostgreSQL would otherwise just scan it; at a
/// million rows, `integration bench --workload read-at-scale` shows the timings).
#[tokio::test]
async fn every_list_and_count_is_served_by_an_index() {
    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 1_000).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 10).await;
    app.accept_visit(&bob.access_token, &visit).await;
    app.requested_visit(&ann.access_token, 10).await;
    let filters = [
        json!(null),
        json!({ "role": "MEMBER" }),
        json!({ "role": "PAL" }),
        json!({ "role": "OPEN" }),
        json!({ "role": "MEMBER", "status": "EXPIRED" }),
        json!({ "status": "REQUESTED" }),
    ];
    for filter in filters {
        let first = app
            .visits(&bob.access_token, filter.clone(), Some(1), None)
            .await;
        app.statement_log.lock().expect("log").clear();
        let cursor = first["data"]["visits"]["pageInfo"]["endCursor"]
            .clone()
            .into_value();
        let page = app
            .visits(&bob.access_token, filter.clone(), Some(1), cursor.as_str())
            .await;
        assert!(!page.has_errors(), "{page}");
        let statements: Vec<String> = app.statement_log.lock().expect("log").clone();
        let reads: Vec<&String> = statements
            .iter()
            .filter(|sql| sql.contains("FROM \"visits\""))
            .collect();
        assert!(
            !reads.is_empty(),
            "{filter}: no visit reads among {statements:?}"
        );
        for sql in reads {
            let plan = explain(&app, sql).await;
            assert!(
                !plan.contains("Seq Scan"),
                "{filter}: {sql}\nreads the whole table:\n{plan}"
            );
            assert!(plan.contains("visits_"), "{filter}: {sql}\n{plan}");
        }
    }
}

async fn explain(app: &TestApp, sql: &str) -> String {
    let backend = app.db.get_database_backend();
    let txn = sea_orm::TransactionTrait::begin(&app.db)
        .await
        .expect("begin");
    txn.execute_unprepared("SET LOCAL enable_seqscan = off")
        .await
        .expect("price out sequential scans");
    let rows = txn
        .query_all_raw(Statement::from_string(backend, format!("EXPLAIN {sql}")))
        .await
        .expect("explain");
    let plan = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("plan line"))
        .collect::<Vec<_>>()
        .join("\n");
    let _ = txn.rollback().await;
    plan
}
