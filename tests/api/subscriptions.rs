//! GraphQL subscriptions over `graphql-transport-ws`, with a real WebSocket client.
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    eventually,
    live::{Frame, LiveClient},
};

use crate::helpers::{PASSWORD, TestApp, TestUser, positive};

const WAIT: Duration = Duration::from_secs(10);
/// Long enough for an event that should not come to have come.
const QUIET: Duration = Duration::from_millis(700);

const VISIT_EVENT: &str = "eventId type visitId occurredAt visit { id status minutes member { id } pal { id firstName email } }";

fn visit_updated() -> String {
    format!("subscription($id: ID!) {{ visitUpdated(id: $id) {{ {VISIT_EVENT} }} }}")
}

fn my_visits() -> String {
    format!("subscription {{ myVisits {{ {VISIT_EVENT} }} }}")
}

fn open_visits() -> String {
    format!("subscription {{ openVisits {{ {VISIT_EVENT} }} }}")
}

pub(crate) async fn live(app: &TestApp, user: &TestUser) -> LiveClient {
    LiveClient::connect(&app.address, &user.access_token)
        .await
        .expect("an accepted socket")
}

/// Subscribes and waits for the answer to a later ping: the server handles a `subscribe` (up to
/// joining the live feed) before it reads the next message, so a change made after the pong is
/// one the subscription sees. A change committed just before may be seen too (the feed trails the
/// log a little); waiting first for the feed to pass every change so far keeps the tests exact.
pub(crate) async fn subscribed(
    app: &TestApp,
    client: &mut LiveClient,
    id: &str,
    query: &str,
    variables: Value,
) {
    feed_caught_up(app).await;
    client
        .subscribe_confirmed(id, query, variables)
        .await
        .expect("subscribed");
}

/// Until the instance's live feed has passed every event in the log.
pub(crate) async fn feed_caught_up(app: &TestApp) {
    eventually(
        Duration::from_secs(5),
        "the live feed past every event",
        || async {
            let (_, ready) = app.readiness().await;
            let feed = &ready["live"]["feed"];
            let beyond: Vec<i64> = if feed["reading"] == false {
                // Nobody listens: the next subscriber starts at the end of the readable log, which
                // holds every change once no older transaction is still open.
                app.query_column(
                "SELECT count(*) FROM outbox WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())",
            )
            .await
            } else {
                app.query_column(&format!(
                    "SELECT count(*) FROM outbox WHERE (txid, position) > ('{}'::xid8, {})",
                    feed["passedTxid"].int(),
                    feed["passedPosition"].int()
                ))
                .await
            };
            (beyond == [0]).then_some(())
        },
    )
    .await;
}

pub(crate) fn kinds(payloads: &[Value], field: &str) -> Vec<String> {
    payloads
        .iter()
        .map(|payload| {
            let event = &payload["data"][field];
            assert!(event.is_object(), "{payload}");
            event["type"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_member_watches_their_visit_taken_and_finished_in_order() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 30).await;
    let mut anns = live(&app, &ann).await;
    subscribed(
        &app,
        &mut anns,
        "one",
        &visit_updated(),
        json!({ "id": visit }),
    )
    .await;
    subscribed(&app, &mut anns, "mine", &my_visits(), json!({})).await;

    app.accept_visit(&bob.access_token, &visit).await;
    app.complete_visit(&bob.access_token, &visit).await;

    let mut one = Vec::new();
    let mut mine = Vec::new();
    while one.len() < 2 || mine.len() < 2 {
        match anns.next(WAIT).await {
            Some(Frame::Message(message)) if message["type"] == "next" => {
                match message["id"].as_str() {
                    Some("one") => one.push(message["payload"].clone()),
                    Some("mine") => mine.push(message["payload"].clone()),
                    _ => panic!("unexpected {message}"),
                }
            }
            other => panic!("expected two events on each subscription, got {other:?}"),
        }
    }
    assert_eq!(kinds(&one, "visitUpdated"), ["ACCEPTED", "COMPLETED"]);
    assert_eq!(kinds(&mine, "myVisits"), ["ACCEPTED", "COMPLETED"]);
    let accepted = &one[0]["data"]["visitUpdated"];
    assert_eq!(accepted["visitId"], visit.as_str());
    assert_eq!(
        accepted["visit"]["status"], "ACCEPTED",
        "the state after that event"
    );
    assert_eq!(accepted["visit"]["pal"]["firstName"], "bob");
    assert_eq!(
        accepted["visit"]["pal"]["email"],
        Value::Null,
        "visibility as in queries"
    );
    assert_eq!(
        one[1]["data"]["visitUpdated"]["visit"]["status"],
        "COMPLETED"
    );
    assert_eq!(
        one[0]["data"]["visitUpdated"]["eventId"], mine[0]["data"]["myVisits"]["eventId"],
        "the same event on both"
    );
    assert_eq!(anns.next(QUIET).await, None, "nothing else");
}

#[tokio::test]
async fn an_idle_feed_hands_on_nothing_and_its_first_subscriber_sees_only_what_follows() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    // Changes while nobody listens: the feed keeps up with where the log is, and hands nothing on.
    for _ in 0..3 {
        app.requested_visit(&ann.access_token, 10).await;
    }
    let mut anns = live(&app, &ann).await;
    feed_caught_up(&app).await;
    let (_, ready) = app.readiness().await;
    let feed = &ready["live"]["feed"];
    assert_eq!(feed["delivered"], 0, "{feed}");

    // The change that follows the confirmation at once is the subscriber's first event, and none
    // of the three before it.
    anns.subscribe_confirmed("mine", &my_visits(), json!({}))
        .await
        .expect("subscribed");
    let visit = app.requested_visit(&ann.access_token, 15).await;
    app.accept_visit(&bob.access_token, &visit).await;
    let seen = anns.payloads("mine", 2, WAIT).await;
    assert_eq!(kinds(&seen, "myVisits"), ["REQUESTED", "ACCEPTED"]);
    assert_eq!(seen[0]["data"]["myVisits"]["visitId"], visit.as_str());
    assert_eq!(anns.next(QUIET).await, None, "nothing else");
}

#[tokio::test]
async fn the_open_list_shows_visits_arriving_and_leaving_but_never_ones_own() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let mut bobs = live(&app, &bob).await;
    subscribed(&app, &mut bobs, "open", &open_visits(), json!({})).await;
    let mut anns = live(&app, &ann).await;
    subscribed(&app, &mut anns, "open", &open_visits(), json!({})).await;

    let visit = app.requested_visit(&ann.access_token, 20).await;
    app.accept_visit(&cy.access_token, &visit).await;

    let seen = bobs.payloads("open", 2, WAIT).await;
    assert_eq!(kinds(&seen, "openVisits"), ["REQUESTED", "ACCEPTED"]);
    assert_eq!(
        seen[0]["data"]["openVisits"]["visit"]["status"],
        "REQUESTED"
    );
    // Taken by someone else: Bob learns it left, and no more of it than a query would show him.
    assert_eq!(seen[1]["data"]["openVisits"]["visitId"], visit.as_str());
    assert_eq!(seen[1]["data"]["openVisits"]["visit"], Value::Null);
    assert_eq!(
        anns.next(QUIET).await,
        None,
        "Ann's own visit is not in her open list"
    );
}

#[tokio::test]
async fn a_socket_needs_a_live_token_and_the_protocol_in_order() {
    let app = TestApp::spawn_with(|config| {
        config.live.connection_init_timeout = Duration::from_secs(1);
    })
    .await;
    let ann = app.register_user("ann").await;
    let closes_with = |code: u16| {
        move |closed: Option<(u16, String)>| {
            assert_eq!(
                closed.as_ref().map(|(code, _)| *code),
                Some(code),
                "{closed:?}"
            );
        }
    };

    let mut anonymous = LiveClient::open(&app.address).await.expect("socket");
    anonymous
        .send(json!({ "type": "connection_init", "payload": {} }))
        .await
        .expect("sent");
    closes_with(4401)(anonymous.closed(WAIT).await);

    let mut forged = LiveClient::open(&app.address).await.expect("socket");
    forged
        .send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-token" } }))
        .await
        .expect("sent");
    closes_with(4403)(forged.closed(WAIT).await);

    let mut hasty = LiveClient::open(&app.address).await.expect("socket");
    hasty
        .subscribe("1", &my_visits(), json!({}))
        .await
        .expect("sent");
    closes_with(4401)(hasty.closed(WAIT).await);

    let mut silent = LiveClient::open(&app.address).await.expect("socket");
    closes_with(4408)(silent.closed(WAIT).await);

    let mut twice = live(&app, &ann).await;
    twice
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", ann.access_token) } }))
        .await
        .expect("sent");
    closes_with(4429)(twice.closed(WAIT).await);

    let mut garbled = live(&app, &ann).await;
    garbled.send_text("{not json").await.expect("sent");
    let (code, reason) = garbled.closed(WAIT).await.expect("closed");
    assert_eq!(code, 4400);
    assert!(reason.starts_with("Invalid message received"), "{reason}");

    let mut binary = live(&app, &ann).await;
    binary.send_binary(b"\x00\x01").await.expect("sent");
    closes_with(4400)(binary.closed(WAIT).await);

    let mut duplicate = live(&app, &ann).await;
    duplicate
        .subscribe("same", &my_visits(), json!({}))
        .await
        .expect("sent");
    duplicate
        .subscribe("same", &my_visits(), json!({}))
        .await
        .expect("sent");
    let (code, reason) = duplicate.closed(WAIT).await.expect("closed");
    assert_eq!(
        (code, reason.as_str()),
        (4409, "Subscriber for same already exists")
    );

    // No subprotocol (or only the retired `graphql-ws`, which a strict client refuses at the
    // handshake already): the socket opens only to say why it closes.
    let mut unspoken = LiveClient::open_offering(&app.address, None)
        .await
        .expect("socket");
    closes_with(4406)(unspoken.closed(WAIT).await);
}

#[tokio::test]
async fn a_visit_you_may_not_see_does_not_exist_for_you_and_bad_input_is_an_error() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let visit = app.requested_visit(&ann.access_token, 20).await;
    app.accept_visit(&bob.access_token, &visit).await;
    let mut cys = live(&app, &cy).await;

    let error_of = |frame: Option<Frame>, id: &str| match frame {
        Some(Frame::Message(message)) if message["type"] == "error" && message["id"] == id => {
            message["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        other => panic!("expected an error for {id}, got {other:?}"),
    };
    cys.subscribe("taken", &visit_updated(), json!({ "id": visit }))
        .await
        .expect("sent");
    assert_eq!(error_of(cys.next(WAIT).await, "taken"), "NOT_FOUND");
    cys.subscribe(
        "nobody",
        &visit_updated(),
        json!({ "id": uuid::Uuid::new_v4() }),
    )
    .await
    .expect("sent");
    assert_eq!(error_of(cys.next(WAIT).await, "nobody"), "NOT_FOUND");
    cys.subscribe("garbage", &visit_updated(), json!({ "id": "garbage" }))
        .await
        .expect("sent");
    assert_eq!(error_of(cys.next(WAIT).await, "garbage"), "BAD_USER_INPUT");
    cys.subscribe("typo", "subscription { myVisit { type } }", json!({}))
        .await
        .expect("sent");
    assert_eq!(
        error_of(cys.next(WAIT).await, "typo"),
        "GRAPHQL_VALIDATION_FAILED"
    );
    cys.subscribe("control", &visit_updated(), json!({ "id": "a\u{0}b" }))
        .await
        .expect("sent");
    assert_eq!(error_of(cys.next(WAIT).await, "control"), "BAD_USER_INPUT");

    // Cy watches an open visit of Ann's; when Bob takes it, Cy is told it left and no more.
    let open = app.requested_visit(&ann.access_token, 10).await;
    subscribed(
        &app,
        &mut cys,
        "watch",
        &visit_updated(),
        json!({ "id": open }),
    )
    .await;
    app.accept_visit(&bob.access_token, &open).await;
    let left = cys.payloads("watch", 1, WAIT).await;
    assert_eq!(left.len(), 1, "the change that took it out of view");
    assert_eq!(left[0]["data"]["visitUpdated"]["type"], "ACCEPTED");
    assert_eq!(left[0]["data"]["visitUpdated"]["visit"], Value::Null);
    match cys.next(WAIT).await {
        Some(Frame::Message(message)) => {
            assert_eq!(message, json!({ "type": "complete", "id": "watch" }));
        }
        other => panic!("expected complete, got {other:?}"),
    }
    app.complete_visit(&bob.access_token, &open).await;
    assert_eq!(cys.next(QUIET).await, None, "nothing after the complete");

    let over_post = app
        .graphql(Some(&ann.access_token), &my_visits(), json!({}))
        .await;
    assert!(over_post.has_errors(), "{over_post}");
    assert_eq!(over_post["data"], Value::Null);
}

#[tokio::test]
async fn logging_out_or_leaving_closes_the_callers_sockets_and_only_theirs() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut anns = live(&app, &ann).await;
    let mut bobs = live(&app, &bob).await;
    subscribed(&app, &mut anns, "mine", &my_visits(), json!({})).await;
    subscribed(&app, &mut bobs, "mine", &my_visits(), json!({})).await;

    let started = std::time::Instant::now();
    app.logout(&ann.access_token).await;
    let (code, reason) = anns.closed(WAIT).await.expect("Ann's socket closed");
    assert_eq!(code, 4403, "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(bobs.next(QUIET).await, None, "Bob's socket stays open");

    app.delete_account(&bob.access_token, PASSWORD).await;
    let (code, _) = bobs.closed(WAIT).await.expect("Bob's socket closed");
    assert_eq!(code, 4403);
}

#[tokio::test]
async fn an_expired_access_token_closes_the_socket_so_the_client_reconnects_with_a_fresh_one() {
    let app =
        TestApp::spawn_with(|config| config.auth.access_token_ttl = Duration::from_secs(2)).await;
    let ann = app.register_user("ann").await;
    let mut anns = live(&app, &ann).await;
    let (code, reason) = anns
        .closed(Duration::from_secs(8))
        .await
        .expect("closed at expiry");
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn notifications_arrive_live() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 25).await;
    let mut anns = live(&app, &ann).await;
    subscribed(
        &app,
        &mut anns,
        "told",
        "subscription { notificationAdded { kind minutes visitId actor { firstName } read } }",
        json!({}),
    )
    .await;

    app.accept_visit(&bob.access_token, &visit).await;

    let told = anns.payloads("told", 1, WAIT).await;
    assert_eq!(
        told.first()
            .map(|payload| payload["data"]["notificationAdded"].clone()),
        Some(
            json!({ "kind": "VISIT_ACCEPTED", "minutes": 25, "visitId": visit,
                     "actor": { "firstName": "bob" }, "read": false })
        )
    );
    assert_eq!(
        anns.next(QUIET).await,
        None,
        "Bob's own notices are not Ann's"
    );
}

#[tokio::test]
async fn a_change_made_through_one_instance_reaches_a_subscriber_on_another() {
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let ann = first.register_user("ann").await;
    let bob = first.register_user("bob").await;
    let visit = first.requested_visit(&ann.access_token, 15).await;
    let mut on_second = live(&second, &ann).await;
    subscribed(
        &second,
        &mut on_second,
        "one",
        &visit_updated(),
        json!({ "id": visit }),
    )
    .await;

    first.accept_visit(&bob.access_token, &visit).await;

    let seen = on_second.payloads("one", 1, WAIT).await;
    assert_eq!(kinds(&seen, "visitUpdated"), ["ACCEPTED"]);
}

#[tokio::test]
async fn caps_close_sockets_with_a_reason_and_shutdown_closes_with_going_away() {
    let app = TestApp::spawn_with(|config| {
        config.live.max_connections = positive(2);
        config.live.max_subscriptions_per_connection = positive(2);
    })
    .await;
    let ann = app.register_user("ann").await;
    let mut busy = live(&app, &ann).await;
    busy.subscribe("1", &my_visits(), json!({}))
        .await
        .expect("sent");
    busy.subscribe("2", &open_visits(), json!({}))
        .await
        .expect("sent");
    busy.subscribe("3", &my_visits(), json!({}))
        .await
        .expect("sent");
    let (code, reason) = busy.closed(WAIT).await.expect("closed");
    assert_eq!(
        (code, reason.as_str()),
        (1008, "more than 2 subscriptions on one socket")
    );

    let mut kept = live(&app, &ann).await;
    subscribed(&app, &mut kept, "mine", &my_visits(), json!({})).await;
    let _second = live(&app, &ann).await;
    let mut third = LiveClient::open(&app.address).await.expect("upgraded");
    let (code, _) = third.closed(WAIT).await.expect("closed");
    assert_eq!(code, 1013, "the instance is full");

    app.shut_down();
    let (code, _) = kept.closed(WAIT).await.expect("closed at shutdown");
    assert_eq!(code, 1001);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_cut_off_rather_than_buffered_for() {
    let app = TestApp::spawn_with(|config| config.live.feed_buffer = positive(2)).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    for _ in 0..3 {
        app.requested_visit(&ann.access_token, 10).await;
    }
    let mut bobs = live(&app, &bob).await;
    subscribed(&app, &mut bobs, "open", &open_visits(), json!({})).await;

    // One transaction, four events (three withdrawn visits, one deactivated user), one batch of
    // the feed: more than Bob's two events of room.
    app.delete_account(&ann.access_token, PASSWORD).await;

    // Closed, not completed: a client drops a completed subscription, but resubscribes after a
    // close it may retry.
    let (code, reason) = loop {
        match bobs.next(WAIT).await {
            Some(Frame::Closed { code, reason }) => break (code, reason),
            Some(Frame::Message(message)) => {
                assert_ne!(
                    message["type"], "complete",
                    "completed before the close: {message}"
                );
            }
            None => panic!("never cut off"),
        }
    };
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("fell behind"), "{reason}");
}

#[tokio::test]
async fn a_burst_of_changes_on_one_instance_all_reach_a_subscriber_on_another() {
    // Writers wake the feeds at most every few milliseconds, so most of a burst commits without a
    // wake-up of its own: the feed's trailing reads must find every one.
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let bob = first.register_user("bob").await;
    let mut members = Vec::new();
    for index in 0..8 {
        members.push(first.register_user(&format!("member{index}")).await);
    }
    let mut bobs = live(&second, &bob).await;
    subscribed(&second, &mut bobs, "open", &open_visits(), json!({})).await;

    let requests = members
        .iter()
        .flat_map(|member| (0..3).map(|_| first.request_visit(&member.access_token, 5)));
    let answers = futures::future::join_all(requests).await;
    assert!(
        answers.iter().all(|answer| !answer.has_errors()),
        "{answers:?}"
    );

    let seen = bobs.payloads("open", 24, WAIT).await;
    assert_eq!(kinds(&seen, "openVisits"), vec!["REQUESTED"; 24]);
    assert_eq!(bobs.next(QUIET).await, None, "each once");
}
