use std::time::Duration;

use serde_json::json;
use testkit::eventually;

use crate::helpers::{PASSWORD, TestApp, TestUser, assert_error_code, auth_payload, positive};

#[tokio::test]
async fn registering_returns_tokens_a_normalised_email_and_the_starting_balance() {
    let app = TestApp::spawn().await;

    let response = app
        .register("  Ann.Lee@Example.COM ", PASSWORD, "  Ann ", "Lee")
        .await;

    let user = &response["data"]["register"]["user"];
    assert_eq!(user["email"], "ann.lee@example.com", "{response}");
    assert_eq!(user["firstName"], "Ann");
    assert_eq!(user["minutes"], 120);
    let me = app
        .me(response["data"]["register"]["accessToken"]
            .as_str()
            .expect("token"))
        .await;
    assert_eq!(me["data"]["me"]["email"], "ann.lee@example.com");
    assert_eq!(me["data"]["me"]["minutes"], 120);
}

#[tokio::test]
async fn the_starting_balance_comes_from_configuration_and_is_opened_with_the_user() {
    let app = TestApp::spawn_with(|config| config.visits.starting_minutes = 300).await;

    let user = app.register_user("bo").await;

    let balances: Vec<i32> = app
        .query_column(&format!(
            "SELECT minutes FROM balances WHERE user_id = '{}' AND starting_minutes = 300",
            user.id
        ))
        .await;
    assert_eq!(balances, vec![300]);
}

#[tokio::test]
async fn registering_an_email_twice_in_any_case_is_refused_without_leaking_sql() {
    let app = TestApp::spawn().await;
    app.register_user("cy").await;

    let response = app
        .register("CY@example.com", PASSWORD, "Other", "Person")
        .await;

    assert_error_code(&response, "BAD_USER_INPUT");
    assert_eq!(
        response["errors"][0]["extensions"]["fields"]["email"],
        json!(["is already registered"])
    );
    let text = response.to_string().to_lowercase();
    assert!(
        !text.contains("duplicate") && !text.contains("users_email_key") && !text.contains("sql")
    );
    let users: Vec<i64> = app.query_column("SELECT count(*) FROM users").await;
    assert_eq!(users, vec![1]);
}

#[tokio::test]
async fn registration_reports_every_invalid_field() {
    let app = TestApp::spawn().await;

    let response = app.register("not-an-email", "short", "   ", "").await;

    assert_error_code(&response, "BAD_USER_INPUT");
    assert_eq!(
        response["errors"][0]["extensions"]["fields"],
        json!({
            "email": ["is not a valid email address"],
            "password": ["must be 8 to 128 characters"],
            "firstName": ["must be 1 to 100 characters"],
            "lastName": ["must be 1 to 100 characters"],
        }),
        "{response}"
    );
    let too_long_name = "x".repeat(101);
    let response = app
        .register("dee@example.com", PASSWORD, &too_long_name, "Dee")
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["fields"],
        json!({ "firstName": ["must be 1 to 100 characters"] }),
        "{response}"
    );
    let response = app
        .register("dee@example.com", &"p".repeat(129), "Dee", "Dee")
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["fields"],
        json!({ "password": ["must be 8 to 128 characters"] }),
        "{response}"
    );
}

#[tokio::test]
async fn logging_in_returns_a_token_that_identifies_the_user() {
    let app = TestApp::spawn().await;
    let registered = app.register_user("eve").await;

    let response = app.login("EVE@example.com", PASSWORD).await;

    let user = auth_payload(&response, "login", "eve@example.com");
    assert_eq!(user.id, registered.id);
    let me = app.me(&user.access_token).await;
    assert_eq!(me["data"]["me"]["id"], registered.id.as_str());
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register_user("fay").await;

    let wrong_password = app.login("fay@example.com", "not the password").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;

    assert_error_code(&wrong_password, "INVALID_CREDENTIALS");
    assert_eq!(
        wrong_password["errors"][0]["message"],
        "invalid email or password"
    );
    assert_eq!(
        wrong_password["errors"][0]["message"],
        unknown_email["errors"][0]["message"]
    );
    assert_eq!(wrong_password.error_code(), unknown_email.error_code());
    assert!(wrong_password["data"].is_null());
}

#[tokio::test]
async fn me_without_a_token_is_unauthenticated() {
    let app = TestApp::spawn().await;

    let response = app.graphql(None, "{ me { id } }", json!({})).await;

    assert_error_code(&response, "UNAUTHENTICATED");
}

#[tokio::test]
async fn refreshing_rotates_the_token_and_a_replayed_token_revokes_the_session() {
    let app = TestApp::spawn().await;
    let user = app.register_user("gus").await;

    let refreshed = app.refresh_session(&user.refresh_token).await;
    let rotated = auth_payload(&refreshed, "refreshSession", &user.email);
    assert_ne!(rotated.refresh_token, user.refresh_token);
    assert_eq!(
        app.me(&rotated.access_token).await["data"]["me"]["id"],
        user.id.as_str()
    );

    // The first token again: a thief and the owner both hold it, so the whole session ends.
    assert_error_code(
        &app.refresh_session(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
    assert_error_code(
        &app.refresh_session(&rotated.refresh_token).await,
        "UNAUTHENTICATED",
    );
    assert_error_code(&app.me(&rotated.access_token).await, "UNAUTHENTICATED");
    assert_error_code(&app.me(&user.access_token).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_unknown_refresh_token_is_refused() {
    let app = TestApp::spawn().await;

    assert_error_code(&app.refresh_session("made-up").await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn logging_out_refuses_the_sessions_tokens_at_once_but_not_other_sessions() {
    let app = TestApp::spawn().await;
    let user = app.register_user("hal").await;
    let other_session = auth_payload(
        &app.login(&user.email, PASSWORD).await,
        "login",
        &user.email,
    );

    assert_eq!(app.logout(&user.access_token).await["data"]["logout"], true);

    assert_error_code(&app.me(&user.access_token).await, "UNAUTHENTICATED");
    assert_error_code(
        &app.refresh_session(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
    assert_eq!(
        app.me(&other_session.access_token).await["data"]["me"]["id"],
        user.id.as_str()
    );
}

#[tokio::test]
async fn deleting_an_account_scrubs_it_ends_its_sessions_and_keeps_its_balance() {
    let app = TestApp::spawn().await;
    let user = app.register_user("ivy").await;

    assert_error_code(
        &app.delete_account(&user.access_token, "wrong password")
            .await,
        "INVALID_CREDENTIALS",
    );
    let response = app.delete_account(&user.access_token, PASSWORD).await;
    assert_eq!(response["data"]["deleteAccount"], true, "{response}");

    assert_error_code(&app.me(&user.access_token).await, "UNAUTHENTICATED");
    assert_error_code(
        &app.refresh_session(&user.refresh_token).await,
        "UNAUTHENTICATED",
    );
    assert_error_code(
        &app.login(&user.email, PASSWORD).await,
        "INVALID_CREDENTIALS",
    );
    let emails: Vec<Option<String>> = app
        .query_column(&format!("SELECT email FROM users WHERE id = '{}'", user.id))
        .await;
    assert_eq!(emails, vec![None]);
    let balances: Vec<i32> = app
        .query_column(&format!(
            "SELECT minutes FROM balances WHERE user_id = '{}'",
            user.id
        ))
        .await;
    assert_eq!(balances, vec![120]);
    // The address is free again, for a new account.
    let again = app.register(&user.email, PASSWORD, "Ivy", "Again").await;
    let new_id = again["data"]["register"]["user"]["id"].as_str();
    assert!(new_id.is_some_and(|id| id != user.id), "{again}");
}

#[tokio::test]
async fn repeated_login_attempts_are_rate_limited() {
    let app = TestApp::spawn_with(|config| {
        config.auth.login_attempts_per_account_per_minute = positive(3)
    })
    .await;
    let user = app.register_user("jo").await;

    for _ in 0..3 {
        assert_error_code(
            &app.login(&user.email, "wrong password").await,
            "INVALID_CREDENTIALS",
        );
    }
    let throttled = app.login(&user.email, PASSWORD).await;

    assert_error_code(&throttled, "RATE_LIMITED");
    // Three a minute: the next attempt is due within 20 s.
    let wait = throttled["errors"][0]["extensions"]["retryAfterSeconds"].as_u64();
    assert!(
        wait.is_some_and(|seconds| (1..=20).contains(&seconds)),
        "{throttled}"
    );
    // Another account from the same address is not locked out by it.
    let other = app.register_user("kim").await;
    let login = app.login(&other.email, PASSWORD).await;
    assert_eq!(
        login["data"]["login"]["user"]["id"],
        other.id.as_str(),
        "{login}"
    );
}

#[tokio::test]
async fn a_logout_on_one_instance_is_honoured_by_another_within_moments() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let user = first.register_user("lou").await;
    // The second instance has now seen the session open, and may remember it.
    assert_eq!(
        second.me(&user.access_token).await["data"]["me"]["id"],
        user.id.as_str()
    );

    assert_eq!(
        first.logout(&user.access_token).await["data"]["logout"],
        true
    );

    eventually(
        Duration::from_secs(2),
        "the sibling refuses the logged-out session",
        || async {
            let response = second.me(&user.access_token).await;
            (response.error_code() == Some("UNAUTHENTICATED")).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn password_guesses_at_account_deletion_are_throttled_like_logins() {
    let app = TestApp::spawn_with(|config| {
        config.auth.login_attempts_per_account_per_minute = positive(3)
    })
    .await;
    let user = app.register_user("guessed").await;

    for _ in 0..3 {
        assert_error_code(
            &app.delete_account(&user.access_token, "wrong password")
                .await,
            "INVALID_CREDENTIALS",
        );
    }
    let right_but_throttled = app.delete_account(&user.access_token, PASSWORD).await;

    assert_error_code(&right_but_throttled, "RATE_LIMITED");
    let active: Vec<i64> = app
        .query_column(&format!(
            "SELECT count(*) FROM users WHERE id = '{}' AND deactivated_at IS NULL",
            user.id
        ))
        .await;
    assert_eq!(active, vec![1], "the account survived the guesses");
}

/// Waits until `app` answers `user` from its revoked set (its listener up and the set loaded): a
/// `me` that sends no statement about sessions.
async fn answered_without_asking(app: &TestApp, user: &TestUser) {
    eventually(
        Duration::from_secs(5),
        "an answer from the revoked set",
        || async {
            let me = app.me(&user.access_token).await;
            assert_eq!(me["data"]["me"]["id"], user.id.as_str(), "{me}");
            let from = app.statement_log.lock().expect("log").len();
            let me = app.me(&user.access_token).await;
            assert!(!me.has_errors(), "{me}");
            session_statements(app, from).is_empty().then_some(())
        },
    )
    .await;
}

/// Statements the instance sent that read or wrote sessions since `from` (its statement log).
fn session_statements(app: &TestApp, from: usize) -> Vec<String> {
    app.statement_log.lock().expect("log")[from..]
        .iter()
        .filter(|sql| sql.contains("\"sessions\"") || sql.contains(" sessions "))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_session_never_seen_before_costs_no_session_query() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let user = first.register_user("nia").await;
    // The sibling's listener is up and its revoked set loaded once it answers from it.
    answered_without_asking(&second, &user).await;
    // A user the sibling has never seen either.
    let other = first.register_user("oli").await;
    let from = second.statement_log.lock().expect("log").len();
    assert!(!second.me(&other.access_token).await.has_errors());
    assert_eq!(session_statements(&second, from), Vec::<String>::new());
}

#[tokio::test]
async fn cutting_the_revocation_listener_loses_no_revocation() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let users = [
        first.register_user("pam").await,
        first.register_user("quin").await,
    ];
    for user in &users {
        assert!(!second.me(&user.access_token).await.has_errors());
    }
    // Cut every revocation listener (both instances'), then revoke at once: the NOTIFY may reach
    // no one, so what the instances believe must come from the database.
    let cut: Vec<bool> = first
        .query_column(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN \"home_visits_session_revoked\"%' AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(!cut.is_empty(), "no listener was found to cut");
    assert_eq!(
        first.logout(&users[0].access_token).await["data"]["logout"],
        true
    );
    // Within a second once the instance notices its listener is gone (at once on a quiet machine);
    // 2 s leaves room for a loaded CI host to schedule that.
    eventually(
        Duration::from_secs(2),
        "the revoked session refused",
        || async {
            let refused = second.me(&users[0].access_token).await;
            (refused.error_code() == Some("UNAUTHENTICATED")).then_some(())
        },
    )
    .await;
    // Once the listener is back and its set reloaded (the other session answered without asking
    // the database), the set itself holds the revocation: refused, again without asking.
    answered_without_asking(&second, &users[1]).await;
    let from = second.statement_log.lock().expect("log").len();
    assert_eq!(
        second.me(&users[0].access_token).await.error_code(),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(session_statements(&second, from), Vec::<String>::new());
}
