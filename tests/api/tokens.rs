use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{TEST_JWT_SECRET, TestApp, TestUser, assert_error_code};

fn claims(user: &TestUser, session_id: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({ "sub": user.id, "sid": session_id, "iat": now, "exp": now + 600, "iss": "home-visits", "aud": "home-visits" })
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signed")
}

async fn user_and_session(app: &TestApp) -> (TestUser, String) {
    let user = app.register_user("tom").await;
    let sessions: Vec<uuid::Uuid> = app
        .query_column(&format!(
            "SELECT id FROM sessions WHERE user_id = '{}'",
            user.id
        ))
        .await;
    (user, sessions[0].to_string())
}

#[tokio::test]
async fn a_token_forged_the_way_the_service_signs_is_accepted_so_the_refusals_below_mean_something()
{
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;

    let token = sign(&claims(&user, &session), TEST_JWT_SECRET);

    assert_eq!(app.me(&token).await["data"]["me"]["id"], user.id.as_str());
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;
    let mut expired = claims(&user, &session);
    expired["iat"] = json!(Utc::now().timestamp() - 3600);
    expired["exp"] = json!(Utc::now().timestamp() - 600);

    assert_error_code(
        &app.me(&sign(&expired, TEST_JWT_SECRET)).await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;

    let forged = sign(
        &claims(&user, &session),
        b"some-other-secret-of-enough-length!!",
    );

    assert_error_code(&app.me(&forged).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_token_for_another_audience_or_issuer_is_refused() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;
    let mut wrong_audience = claims(&user, &session);
    wrong_audience["aud"] = json!("another-service");
    let mut wrong_issuer = claims(&user, &session);
    wrong_issuer["iss"] = json!("someone-else");

    assert_error_code(
        &app.me(&sign(&wrong_audience, TEST_JWT_SECRET)).await,
        "UNAUTHENTICATED",
    );
    assert_error_code(
        &app.me(&sign(&wrong_issuer, TEST_JWT_SECRET)).await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(&user, &session).to_string());

    let unsigned = format!("{header}.{payload}.");

    assert_error_code(&app.me(&unsigned).await, "UNAUTHENTICATED");
}

/// Sessions are not looked up per request (only revocations are known), so the signing key is
/// what a token's session id rests on; what can still be checked without a query is refused: a
/// token meant to outlive the lifetime the service issues, which revocations would not cover.
#[tokio::test]
async fn a_token_minted_to_outlive_the_issued_lifetime_is_refused() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;
    let mut long_lived = claims(&user, &session);
    long_lived["exp"] = json!(Utc::now().timestamp() + 15 * 60 + 60);

    let refused = app.me(&sign(&long_lived, TEST_JWT_SECRET)).await;

    assert_error_code(&refused, "UNAUTHENTICATED");
    assert_eq!(
        refused["errors"][0]["extensions"]["reason"],
        "TOKEN_INVALID"
    );
    assert_error_code(&app.me("not even a jwt").await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_unauthenticated_caller_is_told_whether_refreshing_can_help() {
    let app = TestApp::spawn().await;
    let (user, session) = user_and_session(&app).await;
    let reason = |response: &testkit::reply::Reply| {
        assert_error_code(response, "UNAUTHENTICATED");
        response["errors"][0]["extensions"]["reason"]
            .str()
            .to_string()
    };
    let mut expired = claims(&user, &session);
    expired["iat"] = json!(Utc::now().timestamp() - 3600);
    expired["exp"] = json!(Utc::now().timestamp() - 600);

    let anonymous = app.graphql(None, "{ me { id } }", json!({})).await;
    assert_eq!(reason(&anonymous), "MISSING");
    let stale = app.me(&sign(&expired, TEST_JWT_SECRET)).await;
    assert_eq!(reason(&stale), "TOKEN_EXPIRED");
    assert_eq!(
        stale["errors"][0]["message"],
        "the access token expired: refresh the session"
    );
    let forged = app
        .me(&sign(
            &claims(&user, &session),
            b"another-secret-that-is-32-bytes-long!!",
        ))
        .await;
    assert_eq!(reason(&forged), "TOKEN_INVALID");
    assert_eq!(
        reason(&app.refresh_session("made-up").await),
        "TOKEN_INVALID"
    );

    let refreshed = app.refresh_session(&user.refresh_token).await;
    assert!(!refreshed.has_errors(), "{refreshed}");
    // The used refresh token again: a replay, which ends the session.
    assert_eq!(
        reason(&app.refresh_session(&user.refresh_token).await),
        "SESSION_REVOKED"
    );
    assert_eq!(reason(&app.me(&user.access_token).await), "SESSION_REVOKED");
}
