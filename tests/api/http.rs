use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error_code};

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
        &response.json::<Value>().await.expect("json"),
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
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } }";

    let just_within = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } }";

    let response = app.graphql(None, deep, json!({})).await;
    let allowed = app.graphql(None, just_within, json!({})).await;

    assert_eq!(
        response,
        json!({ "data": null, "errors": [{
            "message": "Query is nested too deep.",
            "extensions": { "code": "BAD_USER_INPUT" }
        }] })
    );
    assert!(allowed["errors"].is_null(), "{allowed}");
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

    assert_error_code(&response, "BAD_USER_INPUT");
    assert!(response["data"].is_null(), "{response}");
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("expected"), "{response}");
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let off = TestApp::spawn_with(|config| config.introspection_enabled = false).await;
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

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app =
        TestApp::spawn_with(|config| config.cors_origins = vec!["https://app.example".into()])
            .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .send()
    };

    let allowed = preflight("https://app.example").await.expect("sent");
    let refused = preflight("https://evil.example").await.expect("sent");

    assert_eq!(
        allowed
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.as_bytes()),
        Some(&b"https://app.example"[..])
    );
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
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
