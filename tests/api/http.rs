use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use testkit::reply::Reply;

use crate::helpers::{TestApp, assert_error_code, positive};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;

    for path in ["/healthz", "/readyz"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_mutation_over_get_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mutation = r#"mutation { register(input: {email: "get@example.com", password: "long enough", firstName: "G", lastName: "E"}) { accessToken } }"#;

    let response = app
        .http
        .get(format!("{}/graphql", app.address))
        .query(&[("query", mutation)])
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error_code(
        &Reply::new(response.json().await.expect("json")),
        "BAD_USER_INPUT",
    );
    let users: Vec<i64> = app.query_column("SELECT count(*) FROM users").await;
    assert_eq!(users, vec![0]);
}

#[tokio::test]
async fn a_query_over_get_is_answered() {
    let app = TestApp::spawn().await;
    let user = app.register_user("gil").await;

    let response: Value = app
        .http
        .get(format!("{}/graphql", app.address))
        .query(&[("query", "{ me { id } }")])
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");

    assert_eq!(response["data"]["me"]["id"], user.id.as_str());
}

#[tokio::test]
async fn browsers_get_graphiql_in_development() {
    let app = TestApp::spawn().await;

    let response = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .to_lowercase()
            .contains("graphiql")
    );
}

#[tokio::test]
async fn a_query_nested_past_the_depth_limit_is_refused() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    // Data fields cannot nest this deep on their own; beside them, introspection counts against
    // the data limit (only a pure introspection query gets the looser one).
    let deep = "{ me { id } __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } }";

    let just_within = "{ me { id } __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } }";

    let response = app.graphql(Some(&ann.access_token), deep, json!({})).await;
    let allowed = app
        .graphql(Some(&ann.access_token), just_within, json!({}))
        .await;

    assert_eq!(
        response,
        json!({ "data": null, "errors": [{
            "message": "Query is nested too deep.",
            "extensions": { "code": "QUERY_TOO_COMPLEX" }
        }] })
    );
    assert!(!allowed.has_errors(), "{allowed}");
    assert!(allowed["data"]["__schema"]["types"].is_array(), "{allowed}");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(200 * 1024);

    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": "{ __typename }", "variables": { "padding": padding } }))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn syntax_errors_carry_a_code() {
    let app = TestApp::spawn().await;

    let response = app.graphql(None, "{ me { id ", json!({})).await;

    assert_error_code(&response, "GRAPHQL_PARSE_FAILED");
    assert!(response["data"].is_null(), "{response}");
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("expected"), "{response}");
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let off = TestApp::spawn_with(|config| config.graphql.introspection = false).await;
    let on = TestApp::spawn().await;
    let query = "{ __schema { queryType { name } } }";

    let refused = off.graphql(None, query, json!({})).await;
    let answered = on.graphql(None, query, json!({})).await;

    // async-graphql answers a disabled `__schema` with null rather than an error.
    assert_eq!(refused, json!({ "data": { "__schema": null } }));
    assert_eq!(
        answered,
        json!({ "data": { "__schema": { "queryType": { "name": "Query" } } } })
    );
}

/// A CORS preflight for a POST from `origin`, asking for `headers` (none when empty).
async fn preflight(app: &TestApp, origin: &str, headers: &str) -> reqwest::Response {
    let mut request = app
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST");
    if !headers.is_empty() {
        request = request.header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers);
    }
    request.send().await.expect("sent")
}

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn production_admits_only_the_configured_origins() {
    let app = TestApp::spawn_with(|config| {
        config.server.cors.local_origins = false;
        config.server.cors.origins = vec!["https://app.example".into()];
    })
    .await;

    let allowed = preflight(&app, "https://app.example", "").await;
    let refused = preflight(&app, "https://evil.example", "").await;
    let local = preflight(&app, "http://localhost:3000", "").await;

    assert_eq!(
        header_of(&allowed, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        header_of(&refused, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        None
    );
    assert_eq!(header_of(&local, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
}

#[tokio::test]
async fn development_admits_local_dev_servers_on_any_port_and_common_client_headers() {
    let app = TestApp::spawn().await;
    let client_headers = "authorization,content-type,apollographql-client-name,apollographql-client-version,traceparent,sentry-trace,baggage";

    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:4567",
        "http://[::1]:8081",
    ] {
        let answer = preflight(&app, origin, client_headers).await;
        assert_eq!(
            header_of(&answer, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
            Some(origin)
        );
        assert_eq!(
            header_of(&answer, header::ACCESS_CONTROL_MAX_AGE).as_deref(),
            Some("600")
        );
        let allowed = header_of(&answer, header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap_or_default();
        for wanted in [
            "apollographql-client-name",
            "traceparent",
            "sentry-trace",
            "baggage",
        ] {
            assert!(allowed.contains(wanted), "{wanted} in {allowed}");
        }
    }
    let foreign = preflight(&app, "http://localhost.evil.example:5173", client_headers).await;
    assert_eq!(
        header_of(&foreign, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        None
    );

    let answer = app
        .http
        .post(format!("{}/graphql", app.address))
        .header(header::ORIGIN, "http://127.0.0.1:4567")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        header_of(&answer, header::ACCESS_CONTROL_EXPOSE_HEADERS).as_deref(),
        Some("x-request-id"),
        "scripts may read the request id"
    );
}

#[tokio::test]
async fn what_is_not_a_graphql_request_is_refused_in_the_graphql_error_shape() {
    let app = TestApp::spawn_with(|config| config.server.max_body_bytes = positive(1024)).await;
    let url = format!("{}/graphql", app.address);
    let post = |content_type: &'static str, body: String| {
        app.http
            .post(&url)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let cases = [
        (
            post("application/json", "{not json".into()),
            StatusCode::BAD_REQUEST,
            "the body is not a GraphQL request in JSON",
        ),
        (
            post("text/plain", r#"{"query":"{ __typename }"}"#.into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/json",
        ),
        (
            post(
                "application/json",
                format!(r#"{{"query":"{}"}}"#, "x".repeat(4096)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this server accepts",
        ),
    ];
    for (sent, status, message) in cases {
        let response = sent.await.expect("sent");
        assert_eq!(response.status(), status);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok()),
            Some("application/json; charset=utf-8")
        );
        let body = Reply::new(response.json().await.expect("a JSON body"));
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}"
        );
        let said = body["errors"][0]["message"].str();
        assert!(said.starts_with(message), "{said}");
        assert!(
            !said.contains("InvalidRequest") && !said.contains("Error("),
            "no Rust debug text: {said}"
        );
    }

    let botched_upgrade = app
        .http
        .get(&url)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .send()
        .await
        .expect("sent");
    assert!(botched_upgrade.status().is_client_error());
    let body = Reply::new(botched_upgrade.json().await.expect("a JSON body"));
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );

    let answered = app
        .http
        .post(&url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("sent");
    let content_type = answered
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.ends_with("; charset=utf-8"), "{content_type}");
}

#[tokio::test]
async fn the_standard_introspection_query_works_while_deeper_ones_stay_bounded() {
    let app = TestApp::spawn().await;
    let standard = include_str!("standard_introspection.graphql");

    let answered = app.graphql(None, standard, json!({})).await;
    assert!(!answered.has_errors(), "{answered}");
    let names: Vec<&str> = answered["data"]["__schema"]["types"]
        .items()
        .map(|kind| kind["name"].str())
        .collect();
    for wanted in [
        "Query",
        "Mutation",
        "Subscription",
        "Visit",
        "Date",
        "DateTime",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }

    // Deeper than any client's introspection: still refused.
    let mut crafted = String::from("{ __schema { types { fields { type ");
    for _ in 0..20 {
        crafted.push_str("{ ofType ");
    }
    crafted.push_str("{ name }");
    crafted.push_str(&" }".repeat(20));
    crafted.push_str(" } } } }");
    let refused = app.graphql(None, &crafted, json!({})).await;
    assert_eq!(
        refused["errors"][0]["message"], "Query is nested too deep.",
        "{refused}"
    );

    // Introspection beside data is a data query, with the data limits.
    let mixed = app
        .graphql(
            None,
            "{ __schema { queryType { name } } me { id } }",
            json!({}),
        )
        .await;
    assert_eq!(mixed.error_code(), Some("UNAUTHENTICATED"), "{mixed}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;

    let request_id = || async {
        let response = app
            .http
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .expect("sent");
        let id = response.headers().get("x-request-id").cloned();
        id.and_then(|id| id.to_str().ok().map(String::from))
            .and_then(|id| uuid::Uuid::parse_str(&id).ok())
            .expect("a uuid in x-request-id")
    };

    assert_ne!(request_id().await, request_id().await);
}

#[tokio::test]
async fn control_characters_in_any_string_are_refused_before_any_sql_and_named() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;

    let registered = app
        .graphql(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            json!({ "input": { "email": "nul@example.com", "password": "correct horse", "firstName": "A\u{0}nn", "lastName": "Lee\u{1b}" } }),
        )
        .await;
    let requested = app
        .graphql(
            Some(&ann.access_token),
            "mutation { requestVisit(input: {date: \"2999-01-01\", minutes: 10, tasks: [{name: \"Tea\\u0000\"}]}) { id } }",
            json!({}),
        )
        .await;
    let logged_in = app
        .graphql(
            None,
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({ "input": { "email": "ann@example.com\u{0}", "password": "x" } }),
        )
        .await;

    let rule =
        "must not contain control characters (tab, line feed and carriage return are allowed)";
    assert_eq!(
        registered["errors"][0]["extensions"],
        json!({ "code": "BAD_USER_INPUT", "fields": { "input.firstName": [rule], "input.lastName": [rule] } })
    );
    assert_eq!(
        requested["errors"][0]["extensions"],
        json!({ "code": "BAD_USER_INPUT", "fields": { "input.tasks.0.name": [rule] } })
    );
    assert_eq!(
        logged_in["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
    let stored: Vec<i64> = app
        .query_column("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM visits)")
        .await;
    assert_eq!(stored, vec![1], "only Ann, nothing of the refused calls");
    let multiline = app
        .graphql(
            Some(&ann.access_token),
            "mutation($input: RequestVisitInput!) { requestVisit(input: $input) { tasks { description } } }",
            json!({ "input": { "date": crate::helpers::tomorrow(), "minutes": 10,
                "tasks": [{ "name": "Tea", "description": "milk\n\tno sugar" }] } }),
        )
        .await;
    assert_eq!(
        multiline["data"]["requestVisit"]["tasks"][0]["description"], "milk\n\tno sugar",
        "stored exactly as sent: {multiline}"
    );
}

#[tokio::test]
async fn readiness_answers_within_a_second_while_the_database_refuses_and_recovers() {
    use sea_orm::ConnectionTrait;
    use secrecy::ExposeSecret;

    let app = TestApp::spawn().await;
    let name: Vec<String> = app.query_column("SELECT current_database()").await;
    // Another database's connection: a database cannot close itself to connections.
    let admin = sea_orm::Database::connect(
        home_visits::db::with_database(
            &secrecy::SecretString::from(app.database_url()),
            "postgres",
        )
        .expose_secret(),
    )
    .await
    .expect("maintenance connection");
    let readiness = || async {
        let started = std::time::Instant::now();
        let response = app
            .http
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .expect("an answer");
        (response.status(), started.elapsed())
    };
    assert_eq!(readiness().await.0, StatusCode::OK);

    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{0}\" WITH ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{0}' AND pid <> pg_backend_pid()",
            name[0]
        ))
        .await
        .expect("database closed");
    let (down, took) = readiness().await;
    assert_eq!(down, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");

    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS true",
            name[0]
        ))
        .await
        .expect("database reopened");
    testkit::eventually(
        std::time::Duration::from_secs(2),
        "ready again within two seconds",
        || async { (readiness().await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary_with_a_policy_that_keeps_it_there() {
    let app = TestApp::spawn_with(|config| config.graphql.graphiql = true).await;
    let page = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.expect("the page");
    let scripts: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(scripts.len(), 4, "{html}");
    for script in scripts {
        assert!(script.starts_with("/graphiql/"), "{script}");
        let asset = app
            .http
            .get(format!("{}{script}", app.address))
            .send()
            .await
            .expect("sent");
        assert_eq!(asset.status(), StatusCode::OK, "{script}");
        assert!(
            asset
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.contains("immutable")),
            "{script}"
        );
    }
    let licences = app
        .http
        .get(format!("{}/graphiql/4.1.2/LICENSES.txt", app.address))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(licences.contains("MIT License"));

    let off = TestApp::spawn_with(|config| config.graphql.graphiql = false).await;
    let asset = off
        .http
        .get(format!("{}/graphiql/4.1.2/start.js", off.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(asset.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_get_without_a_query_is_not_a_graphql_request() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = Reply::new(response.json().await.expect("a JSON body"));
    assert_error_code(&body, "BAD_REQUEST");
    let without_query = app
        .http
        .get(format!(
            "{}/graphql?operationName=Me&variables={{}}",
            app.address
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(without_query.status(), StatusCode::BAD_REQUEST);
    assert_error_code(
        &Reply::new(without_query.json().await.expect("a JSON body")),
        "BAD_REQUEST",
    );
    let unreadable = app
        .http
        .get(format!(
            "{}/graphql?query={{__typename}}&variables=[",
            app.address
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(unreadable.status(), StatusCode::BAD_REQUEST);
    assert_error_code(
        &Reply::new(unreadable.json().await.expect("a JSON body")),
        "BAD_REQUEST",
    );
}

#[tokio::test]
async fn an_empty_bearer_token_is_no_credential_on_either_transport() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .header(header::AUTHORIZATION, "Bearer ")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("sent");
    let body = Reply::new(response.json().await.expect("a JSON body"));
    assert_error_code(&body, "UNAUTHENTICATED");
    assert_eq!(
        body["errors"][0]["extensions"]["reason"], "MISSING",
        "{body}"
    );

    let mut socket = testkit::live::LiveClient::open(&app.address)
        .await
        .expect("socket");
    socket
        .send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer " } }))
        .await
        .expect("sent");
    let closed = socket.closed(std::time::Duration::from_secs(10)).await;
    assert_eq!(closed.map(|(code, _)| code), Some(4401));
}

#[tokio::test]
async fn a_document_of_several_operations_runs_only_the_one_it_names_on_every_transport() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let document = "query Mine { me { id } } mutation Out { logout }";
    // POST and GET alike: without an operationName nothing runs, mutation included.
    let posted = app
        .graphql(Some(&ann.access_token), document, json!({}))
        .await;
    assert!(posted["data"].is_null(), "{posted}");
    assert_error_code(&posted, "BAD_USER_INPUT");
    let over_get = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", ann.access_token),
        )
        .query(&[("query", document)])
        .send()
        .await
        .expect("sent");
    let over_get = Reply::new(over_get.json().await.expect("a JSON body"));
    assert!(over_get["data"].is_null(), "{over_get}");
    assert_error_code(&over_get, "BAD_USER_INPUT");
    // The session is still alive: the mutation never ran.
    let me = app.me(&ann.access_token).await;
    assert_eq!(me["data"]["me"]["id"], ann.id.as_str(), "{me}");

    let mut socket = testkit::live::LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    socket
        .subscribe(
            "1",
            "subscription A { myVisits { type } } subscription B { myVisits { type } }",
            json!({}),
        )
        .await
        .expect("sent");
    match socket.next(std::time::Duration::from_secs(10)).await {
        Some(testkit::live::Frame::Message(message)) => {
            assert_eq!(message["type"], "error", "{message}");
        }
        other => panic!("expected an error message, got {other:?}"),
    }
}
