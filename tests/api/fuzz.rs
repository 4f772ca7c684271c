//! The service fuzzed through its own API: arbitrary strings (NUL and other controls, long ones,
//! any Unicode) and integers for every argument of every root field. Each answer must be GraphQL
//! JSON whose errors carry documented codes, never `INTERNAL`, and the books must balance after.
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use serde_json::{Value, json};

use testkit::reply::Reply;

use crate::helpers::{TestApp, positive, tomorrow};

const DOCUMENTED: [&str; 8] = [
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_USER_INPUT",
    "INVALID_CREDENTIALS",
    "INSUFFICIENT_MINUTES",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
];
const CASES: u32 = 240;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{0,12}\u{0}[a-z]{0,12}",
        "\\PC{0,40}",
        "[\u{1}-\u{1f}\u{7f}-\u{9f}]{1,5}",
        (1usize..6000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
        Just("  ".to_string()),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -5i64..500,
        Just(i64::from(i32::MAX)),
        Just(i64::from(i32::MIN)),
        Just(i64::MAX),
        any::<i64>(),
    ]
}

/// One root field with arbitrary arguments: (query, variables, needs a token).
fn operation(texts: &[String], ints: &[i64], visit: &str, pick: usize) -> (String, Value, bool) {
    let t = |i: usize| texts[i % texts.len()].clone();
    let n = |i: usize| ints[i % ints.len()];
    let id_or_text = |i: usize| {
        if i.is_multiple_of(3) {
            visit.to_string()
        } else {
            t(i)
        }
    };
    match pick % 14 {
        0 => ("mutation($i: RegisterInput!) { register(input: $i) { accessToken } }".into(),
              json!({ "i": { "email": t(0), "password": t(1), "firstName": t(2), "lastName": t(3) } }), false),
        1 => ("mutation($i: LoginInput!) { login(input: $i) { accessToken } }".into(),
              json!({ "i": { "email": t(0), "password": t(1) } }), false),
        2 => ("mutation($i: RefreshSessionInput!) { refreshSession(input: $i) { accessToken } }".into(),
              json!({ "i": { "refreshToken": t(0) } }), false),
        3 => ("mutation($i: RequestVisitInput!) { requestVisit(input: $i) { id } }".into(),
              json!({ "i": { "date": if n(0) % 2 == 0 { tomorrow() } else { t(0) }, "minutes": n(1),
                             "tasks": [{ "name": t(1), "description": t(2) }], "idempotencyKey": t(3) } }), true),
        4 => ("mutation($id: ID!) { acceptVisit(id: $id) { id } }".into(), json!({ "id": id_or_text(0) }), true),
        5 => ("mutation($id: ID!) { completeVisit(id: $id) { id } }".into(), json!({ "id": id_or_text(1) }), true),
        6 => ("mutation($id: ID!) { cancelVisit(id: $id) { id } }".into(), json!({ "id": id_or_text(2) }), true),
        7 => ("query($id: ID!) { visit(id: $id) { id } }".into(), json!({ "id": id_or_text(3) }), true),
        8 => ("query($f: Int, $a: String) { visits(first: $f, after: $a) { totalCount } }".into(),
              json!({ "f": n(0), "a": t(0) }), true),
        9 => ("query($f: Int, $a: String) { transactions(first: $f, after: $a) { totalCount } }".into(),
              json!({ "f": n(1), "a": t(1) }), true),
        10 => ("query($f: Int, $a: String, $u: Boolean) { notifications(first: $f, after: $a, unreadOnly: $u) { totalCount } }".into(),
               json!({ "f": n(2), "a": t(2), "u": n(0) % 2 == 0 }), true),
        11 => ("mutation($i: MarkNotificationsReadInput!) { markNotificationsRead(input: $i) { updated } }".into(),
               json!({ "i": { "ids": [t(0), id_or_text(1)] } }), true),
        12 => ("mutation($i: DeleteAccountInput!) { deleteAccount(input: $i) }".into(),
               json!({ "i": { "password": t(0) } }), true),
        // Inline literals, not variables: the document itself carries the text.
        _ => (format!("{{ visit(id: {}) {{ id }} }}", serde_json::to_string(&t(0)).unwrap_or_default()),
              json!({}), true),
    }
}

/// proptest drives the cases (and, when one fails, shrinks it to the smallest input that still
/// fails); each case's request runs on the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_input_to_every_root_field_gets_a_documented_answer_and_the_books_balance() {
    let app = TestApp::spawn_with(|config| {
        config.auth.login_attempts_per_account_per_minute = positive(1_000_000);
        config.auth.login_attempts_per_address_per_minute = positive(1_000_000);
    })
    .await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&bob.access_token, 30).await;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand_seed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let inputs = (
        proptest::collection::vec(text(), 4),
        proptest::collection::vec(int(), 3),
        any::<usize>(),
    );
    let runtime = tokio::runtime::Handle::current();

    let outcome = tokio::task::block_in_place(|| {
        runner.run(&inputs, |(texts, ints, pick)| {
            let (query, variables, needs_token) = operation(&texts, &ints, &visit, pick);
            let token = needs_token.then_some(ann.access_token.as_str());
            let response = runtime.block_on(app.graphql(token, &query, variables.clone()));
            let context = || format!("FUZZ_SEED={seed}: {query} {variables} -> {response}");
            prop_assert!(response.is_object(), "{}", context());
            prop_assert!(
                response.get("data").is_some() || response.get("errors").is_some(),
                "{}",
                context()
            );
            for error in response.get("errors").into_iter().flat_map(Reply::items) {
                let code = error["extensions"]["code"].str();
                prop_assert!(DOCUMENTED.contains(&code), "{code}: {}", context());
            }
            Ok(())
        })
    });
    if let Err(failure) = outcome {
        panic!("FUZZ_SEED={seed}: {failure}");
    }
    app.assert_invariants().await;
}

fn rand_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(20261201, |elapsed| elapsed.as_nanos() as u64)
}
