//! Resuming a subscription from a cursor: what a client that reconnects gets, and what it is
//! refused.
use std::time::Duration;

use serde_json::{Value, json};
use testkit::live::Frame;

use crate::{
    helpers::TestApp,
    subscriptions::{feed_caught_up, kinds, live, subscribed},
};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

const MY_VISITS: &str = "subscription($after: String) { myVisits(after: $after) { cursor eventId type visitId visit { id status } } }";
const OPEN_VISITS: &str =
    "subscription($after: String) { openVisits(after: $after) { cursor eventId type visitId } }";

fn cursor_of(payload: &Value, field: &str) -> String {
    let cursor = payload["data"][field]["cursor"]
        .as_str()
        .unwrap_or_default();
    assert!(!cursor.is_empty(), "a cursor on every event: {payload}");
    cursor.to_string()
}

fn event_ids(payloads: &[Value], field: &str) -> Vec<String> {
    payloads
        .iter()
        .map(|payload| {
            payload["data"][field]["eventId"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn error_code(frame: Option<Frame>, id: &str) -> String {
    match frame {
        Some(Frame::Message(message)) if message["type"] == "error" && message["id"] == id => {
            message["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        other => panic!("expected an error for {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_reconnects_elsewhere_with_its_cursor_misses_nothing_and_repeats_nothing()
{
    let first = TestApp::spawn().await;
    let second = first.spawn_sibling().await;
    let ann = first.register_user("ann").await;
    let bob = first.register_user("bob").await;
    let mut on_first = live(&first, &ann).await;
    subscribed(&first, &mut on_first, "mine", MY_VISITS, json!({})).await;
    let one = first.requested_visit(&ann.access_token, 10).await;
    first.accept_visit(&bob.access_token, &one).await;
    let before = on_first.payloads("mine", 2, WAIT).await;
    assert_eq!(kinds(&before, "myVisits"), ["REQUESTED", "ACCEPTED"]);
    let last_seen = cursor_of(&before[1], "myVisits");
    drop(on_first);

    // While the client is away: its visit finished, another requested and taken, and a change
    // that is none of its business.
    first.complete_visit(&bob.access_token, &one).await;
    let two = first.requested_visit(&ann.access_token, 15).await;
    second.accept_visit(&bob.access_token, &two).await;
    let cy = first.register_user("cy").await;
    first.requested_visit(&cy.access_token, 5).await;
    feed_caught_up(&second).await;

    let mut on_second = live(&second, &ann).await;
    on_second
        .subscribe("mine", MY_VISITS, json!({ "after": last_seen }))
        .await
        .expect("resumed");
    let missed = on_second.payloads("mine", 3, WAIT).await;
    assert_eq!(
        kinds(&missed, "myVisits"),
        ["COMPLETED", "REQUESTED", "ACCEPTED"]
    );
    assert_eq!(missed[0]["data"]["myVisits"]["visitId"], one.as_str());
    assert_eq!(missed[1]["data"]["myVisits"]["visit"]["id"], two.as_str());
    // Then live, from where the replay ended, with nothing twice.
    first.complete_visit(&bob.access_token, &two).await;
    let then = on_second.payloads("mine", 1, WAIT).await;
    assert_eq!(kinds(&then, "myVisits"), ["COMPLETED"]);
    assert_eq!(on_second.next(QUIET).await, None, "nothing else");

    // Every cursor is a place to resume from: from the first replayed one, the other three.
    let mut again = live(&first, &ann).await;
    let from_first_missed = cursor_of(&missed[0], "myVisits");
    again
        .subscribe("mine", MY_VISITS, json!({ "after": from_first_missed }))
        .await
        .expect("resumed");
    let rest = again.payloads("mine", 3, WAIT).await;
    let expected: Vec<String> = event_ids(&missed[1..], "myVisits")
        .into_iter()
        .chain(event_ids(&then, "myVisits"))
        .collect();
    assert_eq!(event_ids(&rest, "myVisits"), expected);
    assert_eq!(again.next(QUIET).await, None, "nothing else");
}

#[tokio::test]
async fn a_replayed_event_shows_no_more_than_a_live_one_would() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let mut bobs = live(&app, &bob).await;
    subscribed(&app, &mut bobs, "open", OPEN_VISITS, json!({})).await;
    let first = app.requested_visit(&ann.access_token, 10).await;
    let seen = bobs.payloads("open", 1, WAIT).await;
    let last_seen = cursor_of(&seen[0], "openVisits");
    drop(bobs);

    // Bob's own request is never in his open list; cy's visit enters it and leaves it.
    app.requested_visit(&bob.access_token, 10).await;
    let cys = app.requested_visit(&cy.access_token, 10).await;
    app.accept_visit(&ann.access_token, &cys).await;
    app.accept_visit(&cy.access_token, &first).await;
    feed_caught_up(&app).await;

    let mut bobs = live(&app, &bob).await;
    bobs.subscribe("open", OPEN_VISITS, json!({ "after": last_seen }))
        .await
        .expect("resumed");
    let replayed = bobs.payloads("open", 3, WAIT).await;
    let shown: Vec<(String, String)> = replayed
        .iter()
        .map(|payload| {
            let event = &payload["data"]["openVisits"];
            let visit = event["visitId"].as_str().unwrap_or_default().to_string();
            (
                visit,
                event["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (cys.clone(), "REQUESTED".to_string()),
            (cys, "ACCEPTED".to_string()),
            (first, "ACCEPTED".to_string()),
        ]
    );
    assert_eq!(bobs.next(QUIET).await, None, "not bob's own request");
}

#[tokio::test]
async fn a_cursor_is_refused_when_malformed_foreign_or_made_for_another_subscription() {
    let app = TestApp::spawn().await;
    let elsewhere = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let mut anns = live(&app, &ann).await;
    subscribed(&app, &mut anns, "mine", MY_VISITS, json!({})).await;
    app.requested_visit(&ann.access_token, 10).await;
    let seen = anns.payloads("mine", 1, WAIT).await;
    let cursor = cursor_of(&seen[0], "myVisits");

    let stranger = elsewhere.register_user("ann").await;
    let mut strangers = live(&elsewhere, &stranger).await;
    strangers
        .subscribe("foreign", MY_VISITS, json!({ "after": cursor }))
        .await
        .expect("sent");
    assert_eq!(
        error_code(strangers.next(WAIT).await, "foreign"),
        "BAD_USER_INPUT"
    );

    let mut bobs = live(&app, &bob).await;
    bobs.subscribe("not hers", MY_VISITS, json!({ "after": cursor }))
        .await
        .expect("sent");
    assert_eq!(
        error_code(bobs.next(WAIT).await, "not hers"),
        "BAD_USER_INPUT"
    );
    for (id, query, after) in [
        ("other root", OPEN_VISITS, cursor.clone()),
        ("garbage", MY_VISITS, "not a cursor".to_string()),
        (
            "cut short",
            MY_VISITS,
            cursor[..cursor.len() - 4].to_string(),
        ),
    ] {
        anns.subscribe(id, query, json!({ "after": after }))
            .await
            .expect("sent");
        assert_eq!(
            error_code(anns.next(WAIT).await, id),
            "BAD_USER_INPUT",
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_cursor_older_than_the_log_keeps_has_expired() {
    let app = TestApp::spawn_with(|config| {
        config.events.outbox_retention = Some(Duration::from_secs(24 * 3600));
    })
    .await;
    let ann = app.register_user("ann").await;
    let mut anns = live(&app, &ann).await;
    subscribed(&app, &mut anns, "mine", MY_VISITS, json!({})).await;
    app.requested_visit(&ann.access_token, 10).await;
    let recent = cursor_of(&anns.payloads("mine", 1, WAIT).await[0], "myVisits");
    drop(anns);
    // An event that happened two days ago, as the log says, replayed from the recent cursor.
    let old = app.requested_visit(&ann.access_token, 10).await;
    let aged: Vec<i64> = app
        .query_column(&format!(
            "UPDATE outbox SET occurred_at = now() - interval '2 days' \
             WHERE aggregate_id = '{old}' RETURNING position"
        ))
        .await;
    assert_eq!(aged.len(), 1);
    feed_caught_up(&app).await;
    let mut anns = live(&app, &ann).await;
    anns.subscribe("mine", MY_VISITS, json!({ "after": recent }))
        .await
        .expect("resumed");
    let replayed = anns.payloads("mine", 1, WAIT).await;
    assert_eq!(replayed[0]["data"]["myVisits"]["visitId"], old.as_str());
    let expired = cursor_of(&replayed[0], "myVisits");

    anns.subscribe("too old", MY_VISITS, json!({ "after": expired }))
        .await
        .expect("sent");
    assert_eq!(
        error_code(anns.next(WAIT).await, "too old"),
        "CURSOR_EXPIRED"
    );
}
