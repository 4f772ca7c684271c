//! Notifications: a read model fed only by events, through the consumer plumbing every consumer shares.
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use home_visits::events::{
    StoredEvent,
    consumer::{self, Handler, HandlerError, Outcome},
};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Value, json};
use testkit::{eventually, nats::NatsServer, reply::Reply};

use crate::helpers::{TestApp, TestUser};

const LIST: &str = "query($first: Int, $after: String, $unreadOnly: Boolean) {
    notifications(first: $first, after: $after, unreadOnly: $unreadOnly) {
        totalCount unreadCount
        edges { cursor node { id kind minutes read visitId visit { id status } actor { firstName email } } }
        pageInfo { hasNextPage endCursor } } }";

async fn notifications_of(app: &TestApp, user: &TestUser) -> Reply {
    app.graphql(Some(&user.access_token), LIST, json!({})).await["data"]["notifications"].clone()
}

/// Waits for the consumer (it runs beside the requests) to have told `user` `count` things.
async fn told(app: &TestApp, user: &TestUser, count: u64) -> Reply {
    // Up to 30 s: on a loaded 2-core machine a broker's clients have been seen to lose it for
    // over 10 s and reconnect (the relay backs off meanwhile); a healthy run answers in well
    // under a second.
    let what = format!("{} told {count} things", user.email);
    eventually(Duration::from_secs(30), &what, || async {
        let list = notifications_of(app, user).await;
        // The page, not `totalCount`: the count is a statement of its own, run after the page
        // (only when asked for), so it may already see a notification the page did not.
        (list["edges"].items().count() as u64 >= count).then_some(list)
    })
    .await
}

fn kinds(list: &Reply) -> Vec<String> {
    list["edges"]
        .items()
        .map(|edge| edge["node"]["kind"].str().to_string())
        .collect()
}

/// Ann's visit taken and finished by Bob, and one of Cy's that Bob took and Cy withdrew.
async fn a_day_of_visits(app: &TestApp) -> (TestUser, TestUser, TestUser) {
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let visit = app.requested_visit(&ann.access_token, 33).await;
    assert_eq!(
        app.accept_visit(&bob.access_token, &visit)
            .await
            .error_code(),
        None
    );
    assert_eq!(
        app.complete_visit(&bob.access_token, &visit)
            .await
            .error_code(),
        None
    );
    let cys = app.requested_visit(&cy.access_token, 20).await;
    assert_eq!(
        app.accept_visit(&bob.access_token, &cys).await.error_code(),
        None
    );
    assert_eq!(
        app.cancel_visit(&cy.access_token, &cys).await.error_code(),
        None
    );
    (ann, bob, cy)
}

#[tokio::test]
async fn members_and_pals_are_told_what_happened_to_their_visits() {
    let app = TestApp::spawn().await;
    let (ann, bob, cy) = a_day_of_visits(&app).await;

    let anns = told(&app, &ann, 2).await;
    let bobs = told(&app, &bob, 2).await;

    assert_eq!(
        kinds(&anns),
        ["VISIT_COMPLETED", "VISIT_ACCEPTED"],
        "newest first: {anns}"
    );
    assert_eq!(anns["unreadCount"], 2);
    let completed = &anns["edges"][0]["node"];
    // The member sees the minutes debited, and the pal's name as it is now.
    assert_eq!(completed["minutes"], 33);
    assert_eq!(completed["actor"]["firstName"], "bob");
    assert_eq!(completed["actor"]["email"], Value::Null);
    assert_eq!(completed["visit"]["status"], "COMPLETED");
    assert_eq!(
        kinds(&bobs),
        ["VISIT_CANCELLED", "MINUTES_EARNED"],
        "{bobs}"
    );
    assert_eq!(bobs["edges"][1]["node"]["minutes"], 28, "the pal's credit");
    assert_eq!(bobs["edges"][1]["node"]["actor"]["firstName"], "ann");
    assert_eq!(bobs["edges"][0]["node"]["minutes"], 20);
    assert_eq!(bobs["edges"][0]["node"]["actor"]["firstName"], "cy");
    let cys = told(&app, &cy, 1).await;
    assert_eq!(
        kinds(&cys),
        ["VISIT_ACCEPTED"],
        "Cy's visit was taken before she withdrew it"
    );
}

#[tokio::test]
async fn notifications_page_newest_first_and_marking_read_touches_only_your_own() {
    let app = TestApp::spawn().await;
    let (ann, bob, _) = a_day_of_visits(&app).await;
    let anns = told(&app, &ann, 2).await;
    let bobs = told(&app, &bob, 2).await;
    let first_page = app
        .graphql(Some(&ann.access_token), LIST, json!({ "first": 1 }))
        .await;
    let cursor = first_page["data"]["notifications"]["pageInfo"]["endCursor"].clone();
    let second_page = app
        .graphql(
            Some(&ann.access_token),
            LIST,
            json!({ "first": 1, "after": cursor }),
        )
        .await;
    assert_eq!(
        kinds(&first_page["data"]["notifications"]),
        ["VISIT_COMPLETED"]
    );
    assert_eq!(
        kinds(&second_page["data"]["notifications"]),
        ["VISIT_ACCEPTED"]
    );
    assert_eq!(
        second_page["data"]["notifications"]["pageInfo"]["hasNextPage"],
        false
    );
    let mark = "mutation($input: MarkNotificationsReadInput!) {
        markNotificationsRead(input: $input) { updated notFound unreadCount } }";
    let anns_first = anns["edges"][0]["node"]["id"].clone();
    let bobs_first = bobs["edges"][0]["node"]["id"].clone();

    let marked = app
        .graphql(
            Some(&ann.access_token),
            mark,
            json!({ "input": { "ids": [anns_first, bobs_first, "not-an-id"] } }),
        )
        .await;

    assert_eq!(
        marked["data"]["markNotificationsRead"],
        json!({ "updated": 1, "notFound": [bobs_first, "not-an-id"], "unreadCount": 1 })
    );
    assert_eq!(
        notifications_of(&app, &bob).await["unreadCount"],
        2,
        "Bob's are untouched"
    );
    let unread = app
        .graphql(Some(&ann.access_token), LIST, json!({ "unreadOnly": true }))
        .await;
    assert_eq!(kinds(&unread["data"]["notifications"]), ["VISIT_ACCEPTED"]);
    let all = app
        .graphql(
            Some(&ann.access_token),
            mark,
            json!({ "input": { "all": true } }),
        )
        .await;
    assert_eq!(
        all["data"]["markNotificationsRead"]["unreadCount"], 0,
        "{all}"
    );
    let neither = app
        .graphql(Some(&ann.access_token), mark, json!({ "input": {} }))
        .await;
    assert_eq!(neither.error_code(), Some("BAD_USER_INPUT"));
    let too_many = app
        .graphql(Some(&ann.access_token), LIST, json!({ "first": 101 }))
        .await;
    assert_eq!(too_many.error_code(), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn replaying_the_whole_log_changes_nothing() {
    let app = TestApp::spawn().await;
    let (ann, bob, _) = a_day_of_visits(&app).await;
    told(&app, &ann, 2).await;
    told(&app, &bob, 2).await;
    let before: Vec<String> = app
        .query_column("SELECT kind || recipient_id || minutes FROM notifications ORDER BY 1")
        .await;

    // Back to the start of the log: the consumer reads every event again.
    app.db
        .execute_unprepared("DELETE FROM event_checkpoints WHERE name = 'consumer:notifications'")
        .await
        .expect("checkpoint reset");
    eventually(
        Duration::from_secs(5),
        "the consumer reads the log again",
        || async {
            let moved: Vec<i64> = app
                .query_column(
                    "SELECT count(*) FROM event_checkpoints WHERE name = 'consumer:notifications'",
                )
                .await;
            (moved == vec![1]).then_some(())
        },
    )
    .await;
    let after: Vec<String> = app
        .query_column("SELECT kind || recipient_id || minutes FROM notifications ORDER BY 1")
        .await;
    assert_eq!(after, before);
    app.settled().await;
    let announced: Vec<i64> = app
        .query_column("SELECT count(*) FROM outbox WHERE type = 'notification.added'")
        .await;
    assert_eq!(
        announced,
        [5],
        "a replay adds no notification, so announces none"
    );
}

#[tokio::test]
async fn each_new_notification_is_announced_once_by_id_recipient_and_kind() {
    let app = TestApp::spawn().await;
    let (ann, bob, _) = a_day_of_visits(&app).await;
    told(&app, &ann, 2).await;
    told(&app, &bob, 2).await;
    app.settled().await;

    let announced: Vec<String> = app
        .query_column(
            "SELECT json_build_object('aggregate', aggregate_type || ':' || aggregate_id || ':' || aggregate_version, \
                                      'payload', payload)::text \
             FROM outbox WHERE type = 'notification.added' ORDER BY payload->>'notificationId'",
        )
        .await;
    let expected: Vec<String> = app
        .query_column(
            "SELECT json_build_object('aggregate', 'notification:' || id || ':1', \
                                      'payload', json_build_object('notificationId', id, 'recipientId', recipient_id, 'kind', kind))::text \
             FROM notifications ORDER BY id::text",
        )
        .await;
    let parse = |rows: Vec<String>| -> Vec<Value> {
        rows.iter()
            .map(|row| serde_json::from_str(row).expect("JSON"))
            .collect()
    };
    assert_eq!(
        expected.len(),
        5,
        "Ann: accepted, completed; Bob: earned, cancelled; Cy: accepted"
    );
    assert_eq!(parse(announced), parse(expected));
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_the_events_behind_them_still_apply() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let insert = |event_type: &str, version: i32, payload: &str| {
        let id = uuid::Uuid::now_v7();
        format!(
            "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
             VALUES ('{id}', '{event_type}', {version}, 'visit', '{id}', 1, '{payload}')"
        )
    };
    app.db
        .execute_unprepared(&insert("visit.accepted", 1, r#"{"visitId": 42}"#))
        .await
        .expect("garbage payload");
    app.db
        .execute_unprepared(&insert("visit.completed", 7, "{}"))
        .await
        .expect("unknown version");
    app.db
        .execute_unprepared(&insert("visit.teleported", 1, "{}"))
        .await
        .expect("unknown type");
    let visit = app.requested_visit(&ann.access_token, 10).await;
    app.accept_visit(&bob.access_token, &visit).await;

    let anns = told(&app, &ann, 1).await;

    assert_eq!(kinds(&anns), ["VISIT_ACCEPTED"]);
    let letters: Vec<String> = app
        .query_column("SELECT last_error FROM event_dead_letters ORDER BY id")
        .await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters[0].contains("payload unreadable"), "{letters:?}");
    assert!(letters[1].contains("version 7"), "{letters:?}");
    let (_, ready) = app.readiness().await;
    assert_eq!(ready["consumers"][0]["deadLetters"], 2, "{ready}");
    assert_eq!(
        ready["status"], "ready",
        "dead letters do not stall: {ready}"
    );

    let listed = tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
        .args(["events", "dead-letters"])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("events dead-letters runs");
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"]["type"], "visit.accepted");
    assert_eq!(lines[0]["attempts"], 1);
    let redriven = tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
        .args([
            "events",
            "dead-letters",
            "--retry",
            &lines[1]["id"].to_string(),
        ])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("events dead-letters --retry runs");
    assert!(
        String::from_utf8_lossy(&redriven.stdout).contains("DeadLettered"),
        "still poison: {redriven:?}"
    );
}

/// Fails its first `failures` attempts at each event, then writes a marker row.
struct Flaky {
    failures: u32,
    attempts: AtomicU32,
}

impl Handler for Flaky {
    const NAME: &'static str = "flaky";

    const WANTED: &'static [&'static str] = &["user.registered", "user.deactivated"];

    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(HandlerError::Failed("not yet".into()));
        }
        txn.execute_unprepared(&format!(
            "INSERT INTO event_checkpoints (name, txid, position) VALUES ('applied:{}', '0', 0)",
            event.id
        ))
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_failing_twice_applies_once_on_the_third_try_and_redeliveries_change_nothing() {
    let app = TestApp::spawn().await;
    app.register_user("ann").await;
    // The log shows an event once every older transaction in the cluster has ended; another
    // test's open transaction may hold that back a moment.
    let registered = eventually(
        Duration::from_secs(10),
        "user.registered in the log",
        || async {
            home_visits::events::log::read_after(&app.db, Default::default(), 10)
                .await
                .expect("log")
                .into_iter()
                .find(|event| event.event_type == "user.registered")
        },
    )
    .await;
    let db = sea_orm::Database::connect(app.database_url())
        .await
        .expect("db");
    let flaky = Flaky {
        failures: 2,
        attempts: AtomicU32::new(0),
    };

    let first = consumer::process(&db, &flaky, &registered)
        .await
        .expect("processed");
    let again = consumer::process(&db, &flaky, &registered)
        .await
        .expect("processed");

    assert_eq!((first, again), (Outcome::Applied, Outcome::Duplicate));
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
    let applied: Vec<i64> = app
        .query_column("SELECT count(*) FROM event_checkpoints WHERE name LIKE 'applied:%'")
        .await;
    assert_eq!(applied, vec![1]);

    let mut older = registered.clone();
    older.id = uuid::Uuid::now_v7();
    older.aggregate_version = 0;
    let stale = consumer::process(&db, &flaky, &older)
        .await
        .expect("processed");
    assert_eq!(stale, Outcome::Stale);

    let hopeless = Flaky {
        failures: u32::MAX,
        attempts: AtomicU32::new(0),
    };
    let mut another = registered.clone();
    another.id = uuid::Uuid::now_v7();
    another.aggregate_id = uuid::Uuid::new_v4();
    let given_up = consumer::process(&db, &hopeless, &another)
        .await
        .expect("processed");
    assert_eq!(given_up, Outcome::DeadLettered);
    assert_eq!(hopeless.attempts.load(Ordering::SeqCst), consumer::ATTEMPTS);
    let letters: Vec<i32> = app
        .query_column("SELECT attempts FROM event_dead_letters WHERE consumer = 'flaky'")
        .await;
    assert_eq!(letters, vec![3]);
}

#[tokio::test]
async fn a_stalled_consumer_makes_readyz_answer_503_and_name_it() {
    use sea_orm::TransactionTrait;

    let app = TestApp::spawn_with(|config| {
        config.events.consumer_stall_after = Duration::from_millis(500)
    })
    .await;
    assert_eq!(app.readiness().await.0, 200);
    // The consumer's batch lock, held elsewhere: this instance's consumer can do nothing.
    let holder = app.db.begin().await.expect("transaction");
    holder
        .execute_unprepared(
            "SELECT pg_advisory_xact_lock(hashtext('consumer:notifications')::bigint)",
        )
        .await
        .expect("lock");
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 10).await;
    app.accept_visit(&bob.access_token, &visit).await;

    let stalled = eventually(Duration::from_secs(5), "/readyz says 503", || async {
        let readiness = app.readiness().await;
        (readiness.0 == 503).then_some(readiness)
    })
    .await;
    assert_eq!(stalled.1["stalled"], json!(["notifications"]));
    holder.rollback().await.expect("released");
    told(&app, &ann, 1).await;
    assert_eq!(app.readiness().await.0, 200);
}

#[tokio::test]
async fn an_instance_without_consumers_leaves_them_to_the_instances_that_run_them() {
    let serving = TestApp::spawn_with(|config| {
        config.events.consumers = home_visits::config::ConsumerNames(Vec::new())
    })
    .await;
    let (ann, _bob, _cy) = a_day_of_visits(&serving).await;
    // An instance that runs the consumer tells Ann within ~100 ms; give this one ten times that.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(notifications_of(&serving, &ann).await["edges"], json!([]));
    let (status, readiness) = serving.readiness().await;
    assert_eq!(status, 200);
    assert_eq!(readiness["consumers"], json!([]), "{readiness}");
    // Not late either: it never read the log at all.
    let checkpoints = serving
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT name FROM event_checkpoints WHERE name = 'consumer:notifications'",
        ))
        .await
        .expect("checkpoints");
    assert!(checkpoints.is_empty());

    let worker = serving.spawn_sibling().await;
    let anns = told(&worker, &ann, 2).await;
    assert_eq!(kinds(&anns), ["VISIT_COMPLETED", "VISIT_ACCEPTED"]);
    let (_, readiness) = worker.readiness().await;
    assert_eq!(readiness["consumers"][0]["name"], "notifications");
    assert_eq!(serving.readiness().await.1["consumers"], json!([]));
}

#[tokio::test]
async fn with_a_broker_the_consumer_reads_jetstream_and_instances_share_it() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let url = nats.url();
    let first = TestApp::spawn_with({
        let url = url.clone();
        move |config| config.events.nats_servers = vec![url]
    })
    .await;
    let second = first
        .spawn_sibling_with(move |config| config.events.nats_servers = vec![url])
        .await;
    let (ann, bob, _) = a_day_of_visits(&second).await;

    let anns = told(&first, &ann, 2).await;
    let bobs = told(&first, &bob, 2).await;

    assert_eq!(kinds(&anns), ["VISIT_COMPLETED", "VISIT_ACCEPTED"]);
    assert_eq!(kinds(&bobs), ["VISIT_CANCELLED", "MINUTES_EARNED"]);
    let (_, ready) = first.readiness().await;
    assert_eq!(ready["consumers"][0]["source"], "jetstream", "{ready}");
    let handled: Vec<i64> = first
        .query_column("SELECT count(*) FROM event_inbox WHERE consumer = 'notifications'")
        .await;
    assert_eq!(
        handled,
        vec![5],
        "each wanted event handled once across both instances"
    );
}
