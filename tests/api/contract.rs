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
async fn a_required_variable_left_out_refuses_the_request_on_both_transports() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let skipped = "query($s: Boolean!) { me @skip(if: $s) { id } }";
    for body in [
        json!({ "query": skipped }),
        json!({ "query": skipped, "variables": {} }),
    ] {
        let (status, reply) = post(&app, &ann.access_token, GRAPHQL_RESPONSE, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply.get("data").is_none(), "no data: {reply}");
        assert_error_code(&reply, "BAD_USER_INPUT");
        assert!(
            reply["errors"][0]["message"].str().contains("$s"),
            "{reply}"
        );
    }
    let (_, null) = post(
        &app,
        &ann.access_token,
        "application/json",
        json!({ "query": "query($i: ID!) { visit(id: $i) { id } }", "variables": { "i": null } }),
    )
    .await;
    assert!(null["data"].is_null(), "{null}");
    assert_error_code(&null, "BAD_USER_INPUT");
    assert!(
        null["errors"][0].get("path").is_none(),
        "a request error: {null}"
    );
    // Given, it runs.
    let (status, given) = post(
        &app,
        &ann.access_token,
        GRAPHQL_RESPONSE,
        json!({ "query": skipped, "variables": { "s": false } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(given["data"]["me"]["id"], ann.id.as_str(), "{given}");

    let mut socket = LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    socket
        .subscribe(
            "1",
            "subscription($id: ID!) { visitUpdated(id: $id) { type } }",
            json!({}),
        )
        .await
        .expect("sent");
    match socket.next(WAIT).await {
        Some(Frame::Message(message)) => {
            assert_eq!(message["type"], "error", "{message}");
            assert_eq!(
                message["payload"][0]["extensions"]["code"],
                "BAD_USER_INPUT"
            );
            assert!(
                message["payload"][0]["message"]
                    .as_str()
                    .is_some_and(|said| said.contains("$id")),
                "{message}"
            );
        }
        other => panic!("expected an error message, got {other:?}"),
    }
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
async fn a_websocket_message_over_the_limit_is_closed_with_1009() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let mut socket = LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    let oversized = format!(
        r#"{{"type":"ping","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    socket.send_text(&oversized).await.expect("sent");
    let closed = socket.closed(WAIT).await;
    assert_eq!(
        closed.as_ref().map(|(code, _)| *code),
        Some(1009),
        "{closed:?}"
    );

    // One under the limit is read as usual.
    let mut fits = LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    let padded = format!(
        r#"{{"type":"ping","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(60_000)
    );
    fits.send_text(&padded).await.expect("sent");
    match fits.next(WAIT).await {
        Some(Frame::Message(message)) => assert_eq!(message["type"], "pong", "{message}"),
        other => panic!("expected the pong, got {other:?}"),
    }
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

#[tokio::test]
async fn a_subscribe_that_names_no_document_closes_the_socket_with_4400() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let mut socket = LiveClient::connect(&app.address, &ann.access_token)
        .await
        .expect("socket");
    socket
        .send(json!({ "type": "subscribe", "id": "1", "payload": { "variables": {} } }))
        .await
        .expect("sent");
    let closed = socket.closed(WAIT).await;
    assert_eq!(
        closed.as_ref().map(|(code, _)| *code),
        Some(4400),
        "{closed:?}"
    );
}
