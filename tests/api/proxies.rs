//! Behind a load balancer every client arrives from the balancer's address: the login throttle must
//! count the client the trusted proxy names, and must not believe a name any client can write.
use serde_json::{Value, json};

use crate::helpers::{TestApp, positive};

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";

/// A wrong-password login for a fresh address each time (so only the address throttle can bite),
/// sent with `headers`; returns the error code.
async fn failed_login(app: &TestApp, attempt: usize, headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", app.address))
        .json(&json!({
            "query": LOGIN,
            "variables": { "input": { "email": format!("nobody-{attempt}@example.com"), "password": "wrong password" } }
        }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: Value = request
        .send()
        .await
        .expect("the instance answers")
        .json()
        .await
        .expect("JSON");
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error code in {body}"))
        .to_string()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_throttled_on_its_own_address() {
    let app = TestApp::spawn_with(|config| {
        config.auth.login_attempts_per_address_per_minute = positive(2);
        config.server.trusted_proxies.nets =
            home_visits::config::parse::trusted_proxies("127.0.0.0/8").expect("a valid list");
    })
    .await;
    let first = [("x-forwarded-for", "6.6.6.6, 198.51.100.1")];
    assert_eq!(failed_login(&app, 1, &first).await, "INVALID_CREDENTIALS");
    assert_eq!(failed_login(&app, 2, &first).await, "INVALID_CREDENTIALS");
    // The client's own leftmost entry changes nothing: the proxy's is the one believed.
    let forged = [("x-forwarded-for", "7.7.7.7, 198.51.100.1")];
    assert_eq!(failed_login(&app, 3, &forged).await, "RATE_LIMITED");
    // A client's own `Forwarded`, a header this proxy does not write, changes nothing either.
    let smuggled = [
        ("x-forwarded-for", "198.51.100.1"),
        ("forwarded", "for=203.0.113.77"),
    ];
    assert_eq!(failed_login(&app, 4, &smuggled).await, "RATE_LIMITED");
    // Another client behind the same proxy still gets through.
    let second = [("x-forwarded-for", "2001:db8::2")];
    assert_eq!(failed_login(&app, 5, &second).await, "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn an_untrusted_peer_cannot_escape_the_throttle_by_naming_other_addresses() {
    let app = TestApp::spawn_with(|config| {
        config.auth.login_attempts_per_address_per_minute = positive(2)
    })
    .await;
    let spoofs = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
    let mut codes = Vec::new();
    for (attempt, spoof) in spoofs.iter().enumerate() {
        let forwarded = format!("for={spoof}");
        codes.push(
            failed_login(
                &app,
                attempt,
                &[
                    ("x-forwarded-for", spoof),
                    ("forwarded", forwarded.as_str()),
                ],
            )
            .await,
        );
    }
    assert_eq!(
        codes,
        ["INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "RATE_LIMITED"]
    );
}
