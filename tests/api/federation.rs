//! `FEDERATION=on`: the service as an Apollo Federation v2 subgraph. Its entities resolve under the
//! rules of the queries that return them, a batch of representations at the cost of one.
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use testkit::reply::Reply;

use crate::helpers::{TestApp, assert_error_code};

const ENTITIES: &str = "query($r: [_Any!]!) { _entities(representations: $r) { \
    ... on Visit { id status } ... on User { id email } } }";

fn visit(id: &str) -> Value {
    json!({ "__typename": "Visit", "id": id })
}

fn user(id: &str) -> Value {
    json!({ "__typename": "User", "id": id })
}

async fn entities(app: &TestApp, token: Option<&str>, representations: Vec<Value>) -> Reply {
    app.graphql(token, ENTITIES, json!({ "r": representations }))
        .await
}

#[tokio::test]
async fn a_subgraph_resolves_its_entities_under_the_rules_of_its_queries() {
    let app = TestApp::spawn_with(|config| config.graphql.federation = true).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;

    let sdl = app.graphql(None, "{ _service { sdl } }", json!({})).await;
    assert_eq!(
        sdl["data"]["_service"]["sdl"],
        home_visits::api::subgraph_sdl().as_str()
    );
    assert!(home_visits::api::subgraph_sdl().contains(r#"type Visit @key(fields: "id")"#));

    let taken = app.requested_visit(&ann.access_token, 20).await;
    assert!(
        !app.accept_visit(&bob.access_token, &taken)
            .await
            .has_errors()
    );

    // Ann sees her visit and her own email.
    let own = entities(
        &app,
        Some(&ann.access_token),
        vec![visit(&taken), user(&ann.id)],
    )
    .await;
    assert_eq!(own["data"]["_entities"][0]["status"], "ACCEPTED", "{own}");
    assert_eq!(
        own["data"]["_entities"][1]["email"], "ann@example.com",
        "{own}"
    );
    // Cy may not see a visit Bob took, nor Ann's email.
    let other = entities(
        &app,
        Some(&cy.access_token),
        vec![visit(&taken), user(&ann.id)],
    )
    .await;
    assert!(other["data"]["_entities"][0].is_null(), "{other}");
    assert_eq!(
        other["data"]["_entities"][1]["id"],
        ann.id.as_str(),
        "{other}"
    );
    assert!(other["data"]["_entities"][1]["email"].is_null(), "{other}");
    // Nothing without a token, as for `visit` and `me`.
    let anonymous = entities(&app, None, vec![visit(&taken)]).await;
    assert_error_code(&anonymous, "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_batch_of_representations_costs_what_one_does() {
    let app = TestApp::spawn_with(|config| config.graphql.federation = true).await;
    let ann = app.register_user("ann").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.requested_visit(&ann.access_token, 10).await);
    }
    let token = Some(ann.access_token.as_str());
    // Once, so the session check is cached and both counts see the same work.
    entities(&app, token, vec![visit(&ids[0])]).await;
    let statements = |representations: Vec<Value>| async {
        let before = app.statements.load(Ordering::SeqCst);
        let reply = entities(&app, token, representations).await;
        assert!(!reply.has_errors(), "{reply}");
        app.statements.load(Ordering::SeqCst) - before
    };
    let one = statements(vec![visit(&ids[0]), user(&ann.id)]).await;
    let six = statements(
        ids.iter()
            .map(|id| visit(id))
            .chain([user(&ann.id)])
            .collect(),
    )
    .await;
    assert_eq!(one, six, "six visits cost {six} statements, one cost {one}");
}

#[tokio::test]
async fn without_federation_the_api_has_no_subgraph_fields() {
    let app = TestApp::spawn().await;
    let refused = app.graphql(None, "{ _service { sdl } }", json!({})).await;
    assert_error_code(&refused, "GRAPHQL_VALIDATION_FAILED");
}
