//! Trusted documents (`TRUSTED_DOCUMENTS`): the manifest's documents run, by hash or whole, on
//! every transport; anything else is refused before it is parsed; a bad manifest stops the start.
use std::{path::PathBuf, time::Duration};

use home_visits::{config::Config, db, startup};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{
    live::{Frame, LiveClient},
    reply::Reply,
};

use crate::helpers::{REGISTER, TestApp, assert_error_code, fresh_database, tomorrow};

const ME: &str = "query Me { me { id } }";
const REQUEST: &str =
    "mutation Request($input: RequestVisitInput!) { requestVisit(input: $input) { id } }";
const LOGOUT: &str = "mutation Out { logout }";
const WATCH: &str = "subscription Mine { myVisits { type } }";

fn sha256(document: &str) -> String {
    format!("{:x}", Sha256::digest(document.as_bytes()))
}

/// A manifest file of `documents`, in Codegen's shape.
fn manifest(documents: &[&str]) -> PathBuf {
    let entries: serde_json::Map<String, Value> = documents
        .iter()
        .map(|document| (sha256(document), json!(document)))
        .collect();
    let path = std::env::temp_dir().join(format!("trusted-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, Value::Object(entries).to_string()).expect("manifest written");
    path
}

async fn post(app: &TestApp, token: &str, body: Value) -> Reply {
    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    Reply::new(response.json().await.expect("JSON"))
}

fn by_hash(document: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256(document) } })
}

#[tokio::test]
async fn only_the_manifests_documents_run_by_hash_or_whole_on_every_transport() {
    let path = manifest(&[REGISTER, ME, REQUEST, LOGOUT, WATCH]);
    let app = TestApp::spawn_with(|config| {
        config.graphql.trusted_documents = Some(path.clone());
    })
    .await;
    let ann = app.register_user("ann").await;
    let token = ann.access_token.as_str();

    // By hash (Apollo's extension and the draft's documentId) and whole.
    let hashed = post(&app, token, json!({ "extensions": by_hash(ME) })).await;
    assert_eq!(hashed["data"]["me"]["id"], ann.id.as_str(), "{hashed}");
    let named = post(
        &app,
        token,
        json!({ "documentId": format!("sha256:{}", sha256(ME)) }),
    )
    .await;
    assert_eq!(named["data"]["me"]["id"], ann.id.as_str(), "{named}");
    let whole = post(&app, token, json!({ "query": ME })).await;
    assert_eq!(whole["data"]["me"]["id"], ann.id.as_str(), "{whole}");
    let over_get = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .query(&[("documentId", format!("sha256:{}", sha256(ME)))])
        .send()
        .await
        .expect("sent");
    let over_get = Reply::new(over_get.json().await.expect("JSON"));
    assert_eq!(over_get["data"]["me"]["id"], ann.id.as_str(), "{over_get}");

    // Anything else is refused before it is parsed: even a document that would not parse.
    for stranger in ["{ me { id email } }", "{ me { id"] {
        let refused = post(&app, token, json!({ "query": stranger })).await;
        assert_error_code(&refused, "PERSISTED_QUERY_NOT_IN_LIST");
    }
    // Registering is off: a new document with its own hash is still not in the list.
    let stranger = "{ me { email } }";
    let registering = post(
        &app,
        token,
        json!({ "query": stranger, "extensions": by_hash(stranger) }),
    )
    .await;
    assert_error_code(&registering, "PERSISTED_QUERY_NOT_IN_LIST");
    let unknown = post(&app, token, json!({ "extensions": by_hash(stranger) })).await;
    assert_error_code(&unknown, "PERSISTED_QUERY_NOT_FOUND");
    let malformed = post(&app, token, json!({ "documentId": "md5:abc" })).await;
    assert_error_code(&malformed, "BAD_USER_INPUT");

    // The rules of any request hold: bad variables, and no mutation over GET.
    let bad = post(
        &app,
        token,
        json!({ "extensions": by_hash(REQUEST),
                "variables": { "input": { "date": tomorrow(), "minutes": 0, "tasks": [{ "name": "Tea" }] } } }),
    )
    .await;
    assert_error_code(&bad, "BAD_USER_INPUT");
    assert!(
        bad["errors"][0]["extensions"]["fields"]["minutes"].is_array(),
        "{bad}"
    );
    let mutation = app
        .http
        .get(format!("{}/graphql", app.address))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .query(&[("documentId", format!("sha256:{}", sha256(LOGOUT)))])
        .send()
        .await
        .expect("sent");
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);

    // A socket's subscribe by documentId runs; a free-form one is refused.
    let mut socket = LiveClient::connect(&app.address, token)
        .await
        .expect("socket");
    socket
        .send(json!({ "type": "subscribe", "id": "named",
                      "payload": { "documentId": format!("sha256:{}", sha256(WATCH)) } }))
        .await
        .expect("sent");
    socket
        .subscribe(
            "free",
            "subscription { myVisits { type visitId } }",
            json!({}),
        )
        .await
        .expect("sent");
    match socket.next(Duration::from_secs(10)).await {
        Some(Frame::Message(message)) => {
            assert_eq!(
                (message["type"].as_str(), message["id"].as_str()),
                (Some("error"), Some("free")),
                "{message}"
            );
            assert_eq!(
                message["payload"][0]["extensions"]["code"],
                "PERSISTED_QUERY_NOT_IN_LIST"
            );
        }
        other => panic!("expected the free-form subscription refused, got {other:?}"),
    }
    let booked = post(
        &app,
        token,
        json!({ "extensions": by_hash(REQUEST),
                "variables": { "input": { "date": tomorrow(), "minutes": 10, "tasks": [{ "name": "Tea" }] } } }),
    )
    .await;
    assert!(!booked.has_errors(), "{booked}");
    let delivered = socket.payloads("named", 1, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 1, "the trusted subscription runs");

    // Refusals are counted by code.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    let refusals = r#"home_visits_graphql_operations_total{operation="rejected",outcome="PERSISTED_QUERY_NOT_IN_LIST"}"#;
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix(refusals)?.trim().parse::<f64>().ok());
    assert_eq!(counted, Some(4.0), "{metrics}");
    std::fs::remove_file(path).ok();
}

#[tokio::test]
async fn a_manifest_the_service_cannot_trust_stops_it_at_start_naming_file_and_entry() {
    let database = fresh_database().await;
    let broken = std::env::temp_dir().join(format!("trusted-{}.json", uuid::Uuid::new_v4()));
    let cases = [
        (
            format!(r#"{{ "{}": "{ME}" }}"#, "0".repeat(64)),
            "not the SHA-256 of its document",
        ),
        (
            "{ not json".to_string(),
            "neither a persisted-documents.json",
        ),
    ];
    for (content, says) in cases {
        std::fs::write(&broken, content).expect("written");
        let mut config = Config::development();
        config.database.url = Some(database.url.clone());
        config.server.bind_addr = "127.0.0.1:0".parse().expect("an address");
        config.graphql.trusted_documents = Some(broken.clone());
        let pool = db::connect_to(&database.url, &config).await.expect("pool");
        let refused = startup::build_with_database(config, pool).await.err();
        let said = refused
            .map(|error| format!("{error:#}"))
            .unwrap_or_default();
        assert!(
            said.contains("TRUSTED_DOCUMENTS") && said.contains(&broken.display().to_string()),
            "{said}"
        );
        assert!(said.contains(says), "{said}");
    }
    std::fs::remove_file(&broken).ok();
    let mut config = Config::development();
    config.database.url = Some(database.url.clone());
    config.server.bind_addr = "127.0.0.1:0".parse().expect("an address");
    config.graphql.trusted_documents = Some(PathBuf::from("/nonexistent/manifest.json"));
    let pool = db::connect_to(&database.url, &config).await.expect("pool");
    let missing = startup::build_with_database(config, pool).await.err();
    assert!(missing.is_some_and(|error| {
        format!("{error:#}").contains("cannot read /nonexistent/manifest.json")
    }),);
}
