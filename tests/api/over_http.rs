//! GraphQL over HTTP as the specification words it, and the persisted queries mobile links send.
//! In our words: a client that asks for `application/graphql-response+json` gets that type and
//! status codes that mean something (a request that never ran is a 400 without `data`); a client
//! that asks for `application/json`, anything (`*/*`) or nothing gets `application/json` and a 200
//! for every well-formed request; a client that accepts neither gets a 406; a body that is not
//! JSON gets a 415; GET carries `query`, `variables`, `operationName` and `extensions`, and never
//! a mutation (405).
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn post(app: &TestApp, accept: Option<&str>, body: Value) -> Answer {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&body);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    answer(request).await
}

async fn get(app: &TestApp, accept: Option<&str>, parameters: &[(&str, String)]) -> Answer {
    let mut request = app
        .http
        .get(format!("{}/graphql", app.address))
        .query(parameters);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the instance answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.json().await.expect("a JSON body");
    Answer {
        status,
        content_type,
        body,
    }
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn legacy_clients_get_application_json_and_200_for_every_well_formed_request() {
    let app = TestApp::spawn().await;
    for accept in [
        None,
        Some("application/json"),
        Some("*/*"),
        Some("text/html, */*;q=0.1"),
    ] {
        let fine = post(&app, accept, json!({ "query": "{ __typename }" })).await;
        assert_eq!(fine.status, StatusCode::OK, "{accept:?}");
        assert_eq!(
            fine.content_type, "application/json; charset=utf-8",
            "{accept:?}"
        );
        assert_eq!(fine.body["data"]["__typename"], "Query");
        let unparsable = post(&app, accept, json!({ "query": "{ nope" })).await;
        assert_eq!(unparsable.status, StatusCode::OK, "{accept:?}");
        assert_eq!(code(&unparsable.body), "GRAPHQL_PARSE_FAILED");
    }
}

#[tokio::test]
async fn graphql_response_json_clients_get_its_status_codes() {
    let app = TestApp::spawn().await;
    let accept = Some("application/graphql-response+json, application/json;q=0.9");
    let fine = post(&app, accept, json!({ "query": "{ __typename }" })).await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(
        fine.content_type,
        format!("{GRAPHQL_RESPONSE}; charset=utf-8")
    );

    // Requests that never ran: 400, and no `data` at all.
    for (query, expected) in [
        ("{ nope", "GRAPHQL_PARSE_FAILED"),
        ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let refused = post(&app, accept, json!({ "query": query })).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            refused.content_type,
            format!("{GRAPHQL_RESPONSE}; charset=utf-8")
        );
        assert_eq!(code(&refused.body), expected, "{}", refused.body);
        assert!(refused.body.get("data").is_none(), "{}", refused.body);
    }
    let undeclared_variable = post(
        &app,
        accept,
        json!({ "query": "query($n: Int!) { __typename }", "variables": {} }),
    )
    .await;
    assert_eq!(undeclared_variable.status, StatusCode::BAD_REQUEST);

    // A field error is a response that ran: 200, with `data` and the error at its path.
    let field_error = post(&app, accept, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(field_error.status, StatusCode::OK, "{}", field_error.body);
    assert!(
        field_error.body.get("data").is_some(),
        "{}",
        field_error.body
    );
    assert_eq!(code(&field_error.body), "UNAUTHENTICATED");
    assert_eq!(field_error.body["errors"][0]["path"], json!(["me"]));
}

#[tokio::test]
async fn a_client_that_accepts_neither_type_gets_406_and_a_body_that_is_not_json_415() {
    let app = TestApp::spawn().await;
    let refused = post(
        &app,
        Some("text/html"),
        json!({ "query": "{ __typename }" }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(code(&refused.body), "BAD_REQUEST");
    let over_get = get(
        &app,
        Some("application/xml"),
        &[("query", "{ __typename }".into())],
    )
    .await;
    assert_eq!(over_get.status, StatusCode::NOT_ACCEPTABLE);

    let text = answer(
        app.http
            .post(format!("{}/graphql", app.address))
            .header(header::CONTENT_TYPE, "application/graphql")
            .body("{ __typename }"),
    )
    .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn get_carries_variables_operation_name_and_extensions_but_no_mutation() {
    let app = TestApp::spawn().await;
    let document = "query Named($name: String!) { __type(name: $name) { name } } \
                    query Other { __typename }";
    let named = |name: &str, extensions: Option<Value>| {
        let mut parameters = vec![
            ("query", document.to_string()),
            ("variables", json!({ "name": name }).to_string()),
            ("operationName", "Named".to_string()),
        ];
        if let Some(extensions) = extensions {
            parameters.push(("extensions", extensions.to_string()));
        }
        parameters
    };
    let answered = get(
        &app,
        Some(GRAPHQL_RESPONSE),
        &named("Visit", Some(json!({}))),
    )
    .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(answered.body["data"]["__type"]["name"], "Visit");
    let other = get(&app, None, &named("User", None)).await;
    assert_eq!(
        other.body["data"]["__type"]["name"], "User",
        "{}",
        other.body
    );

    let mutation = app
        .http
        .get(format!("{}/graphql", app.address))
        .query(&[("query", "mutation { logout }")])
        .send()
        .await
        .expect("answered");
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        mutation
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn persisted_queries_are_found_by_hash_once_registered() {
    let app = TestApp::spawn().await;
    let user = app.register_user("ada").await;
    let query = "query Me { me { id email } }";
    let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
    let hash_only = || {
        app.http
            .get(format!("{}/graphql", app.address))
            .query(&[
                ("operationName", "Me".to_string()),
                ("extensions", persisted(&hash).to_string()),
            ])
            .bearer_auth(&user.access_token)
    };

    // What Apollo's link does: the hash alone, as a GET; not found; then the query with its hash.
    let unknown = answer(hash_only()).await;
    assert_eq!(
        code(&unknown.body),
        "PERSISTED_QUERY_NOT_FOUND",
        "{}",
        unknown.body
    );
    assert_eq!(
        unknown.body["errors"][0]["message"],
        "PersistedQueryNotFound"
    );
    let registered = answer(
        app.http
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&user.access_token)
            .json(
                &json!({ "query": query, "operationName": "Me", "extensions": persisted(&hash) }),
            ),
    )
    .await;
    assert_eq!(
        registered.body["data"]["me"]["id"],
        user.id.as_str(),
        "{}",
        registered.body
    );
    let found = answer(hash_only()).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(
        found.body["data"]["me"]["email"],
        user.email.as_str(),
        "{}",
        found.body
    );

    // A hash that is not the document's registers nothing.
    let forged = post(
        &app,
        None,
        json!({ "query": "{ __typename }", "extensions": persisted(&"ab".repeat(32)) }),
    )
    .await;
    assert_eq!(code(&forged.body), "BAD_USER_INPUT", "{}", forged.body);
}

#[tokio::test]
async fn a_persisted_mutation_is_still_refused_over_get_and_limits_still_apply() {
    let app = TestApp::spawn_with(|config| config.graphql.max_aliases = 2).await;
    let mutation = "mutation { logout }";
    let hash = format!("{:x}", Sha256::digest(mutation.as_bytes()));
    post(
        &app,
        None,
        json!({ "query": mutation, "extensions": persisted(&hash) }),
    )
    .await;
    let over_get = app
        .http
        .get(format!("{}/graphql", app.address))
        .query(&[("extensions", persisted(&hash).to_string())])
        .send()
        .await
        .expect("answered");
    assert_eq!(over_get.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The stored text is parsed again with the limits: three aliases stay two too many.
    let aliased = "{ a: __typename b: __typename c: __typename }";
    let hash = format!("{:x}", Sha256::digest(aliased.as_bytes()));
    let registering = post(
        &app,
        None,
        json!({ "query": aliased, "extensions": persisted(&hash) }),
    )
    .await;
    assert_eq!(
        code(&registering.body),
        "QUERY_TOO_COMPLEX",
        "{}",
        registering.body
    );
    let by_hash = get(&app, None, &[("extensions", persisted(&hash).to_string())]).await;
    assert_eq!(code(&by_hash.body), "QUERY_TOO_COMPLEX", "{}", by_hash.body);
}
