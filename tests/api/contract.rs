//! The GraphQL over HTTP and WebSocket contracts where async-graphql alone would answer otherwise:
//! required variables, the request's media type, an empty batch, a message over the size limit,
//! and the length of a syntax error.
use std::time::Duration;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use testkit::{
    live::{Frame, LiveClient},
    reply::Reply,
};

use crate::helpers::{TestApp, assert_error_code};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const WAIT: Duration = Duration::from_secs(10);

async fn post(app: &TestApp, token: &str, accept: &str, body: Value) -> (StatusCode, Reply) {
    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, accept)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, Reply::new(response.json().await.expect("JSON")))
}

#[tokio::test]
async fn a_post_without_a_content_type_is_refused_with_415() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error_code(
        &Reply::new(response.json().await.expect("JSON")),
        "BAD_REQUEST",
    );
}

#[tokio::test]
async fn an_empty_batch_is_a_malformed_request_whatever_the_client_accepts() {
    let app = TestApp::spawn().await;
    for accept in [GRAPHQL_RESPONSE, "application/json"] {
        let response = app
            .http
            .post(format!("{}/graphql", app.address))
            .header(header::ACCEPT, accept)
            .json(&json!([]))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{accept}");
        assert_error_code(
            &Reply::new(response.json().await.expect("JSON")),
            "BAD_REQUEST",
        );
    }
    // A batch of one still runs.
    let one = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!([{ "query": "{ __typename }" }]))
        .send()
        .await
        .expect("sent");
    let one: Value = one.json().await.expect("JSON");
    assert_eq!(one[0]["data"]["__typename"], "Query", "{one}");
}

#[tokio::test]
async fn a_syntax_error_quotes_an_excerpt_not_its_whole_line() {
    let app = TestApp::spawn().await;
    let document = format!("{{ me {{ id {} $ }} }}", "name ".repeat(12_000));
    assert!(document.len() > 60_000);
    let reply = app.graphql(None, &document, json!({})).await;
    assert_error_code(&reply, "GRAPHQL_PARSE_FAILED");
    let message = reply["errors"][0]["message"].str();
    assert!(message.len() <= 400, "{} bytes: {message}", message.len());
    assert!(message.contains("column"), "{message}");
    // A short document's error keeps the parser's own words.
    let short = app.graphql(None, "{ me { id $ } }", json!({})).await;
    assert_error_code(&short, "GRAPHQL_PARSE_FAILED");
    assert!(
        short["errors"][0]["message"].str().contains("1:"),
        "{short}"
    );
}
