//! `/metrics`: Prometheus text that moves with what the instance does, where `METRICS` puts it.
use home_visits::config::MetricsExposure;
use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::TestApp;

async fn scrape(app: &TestApp, base: &str) -> String {
    let response = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scraped");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("text")
}

/// The value of the sample line that starts with `series` (name and labels), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn counters_move_with_the_operations_an_instance_answers() {
    let app = TestApp::spawn().await;
    // A sibling in the same process counts apart: nothing it answers shows here.
    let sibling = app.spawn_sibling().await;
    sibling
        .graphql(None, "query MetricsProbe { __typename }", json!({}))
        .await;
    let operation = "query MetricsProbe { __typename }";
    let ok = r#"home_visits_graphql_operations_total{operation="MetricsProbe",outcome="ok"}"#;
    let before = scrape(&app, &app.address).await;
    assert_eq!(sample(&before, ok), None, "not counted before it ran");
    // Counted by the `operationName` the client sends, as Apollo and urql do.
    let send = |query: &'static str| {
        app.http
            .post(format!("{}/graphql", app.address))
            .json(&json!({ "query": query, "operationName": "MetricsProbe" }))
            .send()
    };
    for _ in 0..3 {
        send(operation).await.expect("answered");
    }
    // A document that never ran does not get its name into the label set.
    let refused = r#"home_visits_graphql_operations_total{operation="rejected",outcome="GRAPHQL_VALIDATION_FAILED"}"#;
    assert_eq!(sample(&before, refused), None);
    send("query MetricsProbe { nope }").await.expect("answered");

    let after = scrape(&app, &app.address).await;
    assert_eq!(sample(&after, ok), Some(3.0), "{after}");
    assert_eq!(sample(&after, refused), Some(1.0), "{after}");
    assert!(!after.contains(r#"operation="MetricsProbe",outcome="GRAPHQL_VALIDATION_FAILED""#));
    assert_eq!(
        sample(
            &after,
            r#"home_visits_graphql_operation_duration_seconds_count{operation="MetricsProbe",outcome="ok"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"home_visits_http_responses_total{route="/graphql",status="200"}"#
        ),
        Some(4.0),
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"home_visits_database_pool_connections{state="max"}"#
        )
        .is_some()
    );
    assert!(
        sample(
            &after,
            r#"home_visits_consumer_lag_events{consumer="notifications"}"#
        )
        .is_some()
    );
    assert!(sample(&after, "home_visits_websockets_open").is_some());
    assert!(after.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn metrics_can_be_switched_off_or_given_an_address_of_their_own() {
    let off = TestApp::spawn_with(|config| config.server.metrics = MetricsExposure::Off).await;
    let response = off
        .http
        .get(format!("{}/metrics", off.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let apart = TestApp::spawn_with(|config| {
        config.server.metrics = MetricsExposure::Own("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    let own = apart.metrics_address.clone().expect("a metrics address");
    // Each instance has its own registry: a series shows once this one answered something.
    apart.graphql(None, "{ __typename }", json!({})).await;
    assert!(
        scrape(&apart, &own)
            .await
            .contains("home_visits_graphql_operations")
    );
    let beside_the_api = apart
        .http
        .get(format!("{}/metrics", apart.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(beside_the_api.status(), StatusCode::NOT_FOUND);
}
