//! `LOG_FORMAT=json`: one JSON object per line, each request's lines carrying its request id,
//! operation, user id, trace id and, when it ends, its duration; never a token or a password.
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{ServiceProcess, fresh_database, start_service_process};

#[tokio::test]
async fn json_logs_name_the_request_operation_user_and_trace_and_keep_secrets_out() {
    let database = fresh_database().await;
    let ServiceProcess {
        child: mut service,
        port,
        mut lines,
        logged_before: mut logged,
    } = start_service_process(database.url.expose_secret(), &[]).await;
    let url = format!("http://127.0.0.1:{port}/graphql");
    let http = reqwest::Client::new();
    let password = "a password for the logs";
    let registered: Value = http
        .post(&url)
        .json(&json!({
            "query": "mutation Register($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
            "operationName": "Register",
            "variables": { "input": { "email": "logs@example.com", "password": password, "firstName": "Lo", "lastName": "Gs" } }
        }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let token = registered["data"]["register"]["accessToken"]
        .as_str()
        .expect("a token")
        .to_string();
    let user_id = registered["data"]["register"]["user"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let me = http
        .post(&url)
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({ "query": "query Me { me { id } }", "operationName": "Me" }))
        .send()
        .await
        .expect("sent");
    let request_id = me
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .expect("a request id")
        .to_string();

    // The `Me` request's closing line, and everything logged until it.
    let finished = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the request is logged")
            .expect("readable")
            .expect("still running");
        let entry: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        logged.push(entry.clone());
        if entry["message"] == "finished processing request" && entry["span"]["operation"] == "Me" {
            break entry;
        }
    };
    let span = &finished["span"];
    assert_eq!(span["request_id"], request_id.as_str(), "{finished}");
    assert_eq!(span["user_id"], user_id.as_str(), "{finished}");
    assert_eq!(span["trace_id"], trace, "{finished}");
    assert_eq!(span["uri"], "/graphql");
    assert!(
        finished["latency"].is_string() || finished["latency"].is_number(),
        "{finished}"
    );
    assert_eq!(finished["status"], 200, "{finished}");
    let everything = serde_json::to_string(&logged).expect("serializes");
    assert!(!everything.contains(&token), "a token in the logs");
    assert!(!everything.contains(password), "a password in the logs");
    service.kill().await.ok();
}
