//! Domain events: what each change records in the outbox, and the log reader's order.
use std::time::Duration;

use home_visits::events::log::{self, LogPosition};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use testkit::eventually;

use crate::helpers::{PASSWORD, TestApp, tomorrow};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_visits_life_records_each_step_with_the_state_after_it() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let date = tomorrow();

    let requested = app
        .http
        .post(format!("{}/graphql", app.address))
        .bearer_auth(&ann.access_token)
        .header("traceparent", TRACEPARENT)
        .json(&json!({
            "query": "mutation($input: RequestVisitInput!) { requestVisit(input: $input) { id } }",
            "variables": { "input": { "date": date, "minutes": 33,
                "tasks": [{ "name": "Shopping" }, { "name": "Tea", "description": "Earl Grey" }] } }
        }))
        .send()
        .await
        .expect("sent")
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    let visit = requested["data"]["requestVisit"]["id"]
        .as_str()
        .expect("a visit id")
        .to_string();
    let accepted = app.accept_visit(&bob.access_token, &visit).await;
    assert_eq!(accepted.error_code(), None, "{accepted}");
    let completed = app.complete_visit(&bob.access_token, &visit).await;
    let transaction = completed["data"]["completeVisit"]["id"]
        .as_str()
        .expect("a transaction id")
        .to_string();

    let events = app.recorded_events().await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.registered",
            "user.registered",
            "visit.requested",
            "visit.accepted",
            "visit.completed",
            "ledger.transfer_recorded"
        ]
    );
    assert_eq!(events[0].payload, json!({ "userId": ann.id }));
    assert_eq!(
        (
            events[0].aggregate_type.as_str(),
            events[0].aggregate_id.as_str()
        ),
        ("user", ann.id.as_str())
    );
    assert_eq!(events[1].payload, json!({ "userId": bob.id }));
    let visit_state = |status: &str, pal: Option<&str>| {
        json!({ "visitId": visit, "memberId": ann.id, "palId": pal, "date": date,
                "minutes": 33, "status": status })
    };
    let with = |mut state: serde_json::Value, extra: serde_json::Value| {
        if let (Some(state), Some(extra)) = (state.as_object_mut(), extra.as_object()) {
            state.extend(extra.clone());
        }
        state
    };
    assert_eq!(
        events[2].payload,
        with(visit_state("REQUESTED", None), json!({ "taskCount": 2 }))
    );
    assert_eq!(events[3].payload, visit_state("ACCEPTED", Some(&bob.id)));
    assert_eq!(
        events[4].payload,
        with(
            visit_state("COMPLETED", Some(&bob.id)),
            json!({ "previousStatus": "ACCEPTED", "transactionId": transaction, "palCredit": 28, "fee": 5 })
        )
    );
    assert_eq!(
        events[5].payload,
        json!({ "transactionId": transaction, "visitId": visit, "memberId": ann.id,
                "palId": bob.id, "minutes": 33, "palCredit": 28, "fee": 5 })
    );
    let visit_versions: Vec<(String, i64)> = events[2..5]
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.aggregate_version))
        .collect();
    assert_eq!(
        visit_versions,
        vec![(visit.clone(), 1), (visit.clone(), 2), (visit.clone(), 3)]
    );
    assert_eq!(
        (
            events[5].aggregate_type.as_str(),
            events[5].aggregate_version
        ),
        ("transaction", 1)
    );
    assert_eq!(events[2].traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(events[3].traceparent, None);
}

#[tokio::test]
async fn cancellations_and_a_deleted_account_record_what_they_changed() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let cy = app.register_user("cy").await;
    let waiting = app.requested_visit(&ann.access_token, 10).await;
    let taken = app.requested_visit(&ann.access_token, 20).await;
    app.accept_visit(&bob.access_token, &taken).await;
    let cys = app.requested_visit(&cy.access_token, 30).await;
    app.accept_visit(&ann.access_token, &cys).await;
    let cys_other = app.requested_visit(&cy.access_token, 40).await;
    let cancelled = app.cancel_visit(&cy.access_token, &cys_other).await;
    assert_eq!(cancelled.error_code(), None, "{cancelled}");
    let before = app.recorded_events().await.len();

    let deleted = app.delete_account(&ann.access_token, PASSWORD).await;
    assert_eq!(deleted["data"]["deleteAccount"], true, "{deleted}");

    let events = app.recorded_events().await;
    let cy_cancelled = &events[before - 1];
    assert_eq!(cy_cancelled.event_type, "visit.cancelled");
    assert_eq!(cy_cancelled.payload["previousStatus"], "REQUESTED");
    assert_eq!(cy_cancelled.payload["status"], "CANCELLED");
    let mut by_visit: Vec<(String, serde_json::Value)> = events[before..]
        .iter()
        .filter(|e| e.aggregate_type == "visit")
        .map(|e| {
            let mut payload = e.payload.clone();
            payload["type"] = json!(e.event_type);
            (e.aggregate_id.clone(), payload)
        })
        .collect();
    by_visit.sort_by(|a, b| a.0.cmp(&b.0));
    let date = tomorrow();
    let mut expected = vec![
        (
            waiting.clone(),
            json!({ "type": "visit.cancelled", "visitId": waiting, "memberId": ann.id, "palId": null,
                    "date": date, "minutes": 10, "status": "CANCELLED", "previousStatus": "REQUESTED" }),
        ),
        (
            taken.clone(),
            json!({ "type": "visit.cancelled", "visitId": taken, "memberId": ann.id, "palId": bob.id,
                    "date": date, "minutes": 20, "status": "CANCELLED", "previousStatus": "ACCEPTED" }),
        ),
        (
            cys.clone(),
            json!({ "type": "visit.released", "visitId": cys, "memberId": cy.id, "palId": null,
                    "date": date, "minutes": 30, "status": "REQUESTED", "previousPalId": ann.id }),
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_visit, expected);
    // Identity's step comes first in the deletion's transaction, then the visits'.
    let deactivated = &events[before];
    assert_eq!(
        (deactivated.event_type.as_str(), &deactivated.payload),
        ("user.deactivated", &json!({ "userId": ann.id }))
    );
    assert_eq!(events.len(), before + 4);
}

#[tokio::test]
async fn refused_and_repeated_mutations_record_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let input = json!({ "date": tomorrow(), "minutes": 60, "tasks": [{ "name": "Tea" }], "idempotencyKey": "k1" });
    let first = app
        .request_visit_with(&ann.access_token, input.clone())
        .await;
    let visit = first["data"]["requestVisit"]["id"]
        .as_str()
        .expect("a visit")
        .to_string();
    let after_request = app.recorded_types().await;

    let replay = app.request_visit_with(&ann.access_token, input).await;
    let refused = app.request_visit(&ann.access_token, 61).await;
    let own = app.complete_visit(&ann.access_token, &visit).await;
    assert_eq!(replay.error_code(), None, "{replay}");
    assert_eq!(refused.error_code(), Some("INSUFFICIENT_MINUTES"));
    assert_eq!(own.error_code(), Some("FORBIDDEN"));
    assert_eq!(app.recorded_types().await, after_request);

    app.complete_visit(&bob.access_token, &visit).await;
    let after_completion = app.recorded_types().await;
    let again = app.complete_visit(&bob.access_token, &visit).await;
    let cancel = app.cancel_visit(&ann.access_token, &visit).await;
    assert_eq!(again.error_code(), Some("CONFLICT"));
    assert_eq!(cancel.error_code(), Some("CONFLICT"));
    assert_eq!(app.recorded_types().await, after_completion);
    assert_eq!(
        after_completion,
        [
            "user.registered",
            "user.registered",
            "visit.requested",
            "visit.completed",
            "ledger.transfer_recorded"
        ]
    );
}

#[tokio::test]
async fn no_event_carries_personal_data() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("annabelle").await;
    let bob = app.register_user("bartholomew").await;
    let visit = app.requested_visit(&ann.access_token, 30).await;
    app.complete_visit(&bob.access_token, &visit).await;
    app.delete_account(&bob.access_token, PASSWORD).await;

    let everything: Vec<String> = app
        .query_column("SELECT payload::text || coalesce(traceparent, '') FROM outbox")
        .await;
    assert!(everything.len() >= 5, "{everything:?}");
    for text in everything {
        for personal in ["annabelle", "bartholomew", "example.com", "Tester"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
}

/// A reader keyed on `position` alone fails this: after the first read it would stand at the later
/// event's position, and the earlier position, committed afterwards, would lie behind it for ever.
#[tokio::test]
async fn the_log_delivers_an_event_whose_transaction_commits_after_a_later_one() {
    let app = TestApp::spawn().await;
    let insert = |id: &str| {
        format!(
            "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
             VALUES ('{id}', 'user.registered', 1, 'user', '{id}', 1, '{{}}')"
        )
    };
    let first_id = uuid::Uuid::now_v7().to_string();
    let second_id = uuid::Uuid::now_v7().to_string();
    let slow = app.db.begin().await.expect("transaction");
    slow.execute_unprepared(&insert(&first_id))
        .await
        .expect("first event, lower position");
    let fast = app.db.begin().await.expect("transaction");
    fast.execute_unprepared(&insert(&second_id))
        .await
        .expect("second event, higher position");
    let lower = position_in(&slow, &first_id).await;
    let higher = position_in(&fast, &second_id).await;
    assert!(lower < higher);
    fast.commit().await.expect("the later event commits first");

    // The slow transaction still runs: nothing at or after it is handed out yet.
    let cursor = LogPosition::default();
    let early = log::read_after(&app.db, cursor, 100).await.expect("read");
    assert!(early.is_empty(), "{early:?}");
    slow.commit().await.expect("the earlier event commits last");

    // Read on from where each read ended, as a consumer does. Another test's open transaction
    // in the same cluster may hold the horizon back a moment.
    let reader = std::sync::Mutex::new((cursor, Vec::new()));
    let delivered = eventually(Duration::from_secs(5), "both events delivered", || async {
        let from = reader.lock().expect("the reader").0;
        let batch = log::read_after(&app.db, from, 100).await.expect("read");
        let mut reader = reader.lock().expect("the reader");
        if let Some(last) = batch.last() {
            reader.0 = last.log_position();
        }
        reader
            .1
            .extend(batch.into_iter().map(|event| event.id.to_string()));
        (reader.1.len() >= 2).then(|| reader.1.clone())
    })
    .await;
    assert_eq!(delivered, vec![first_id, second_id]);
}

#[tokio::test]
async fn the_log_orders_transaction_ids_as_numbers_not_as_text() {
    // As text, "10" sorts before "9": a reader ordered that way reads 10 first, moves its cursor
    // past 9 and never delivers it (the queries select `txid::text AS txid`, and a bare
    // `ORDER BY txid` means that text column).
    let app = TestApp::spawn().await;
    let insert = |id: &str, txid: u64| {
        format!(
            "INSERT INTO outbox (id, txid, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
             VALUES ('{id}', '{txid}'::xid8, 'user.registered', 1, 'user', '{id}', 1, '{{}}')"
        )
    };
    let ten = uuid::Uuid::now_v7().to_string();
    let nine = uuid::Uuid::now_v7().to_string();
    app.db
        .execute_unprepared(&insert(&ten, 10))
        .await
        .expect("txid 10");
    app.db
        .execute_unprepared(&insert(&nine, 9))
        .await
        .expect("txid 9");

    let first = log::read_after(&app.db, LogPosition::default(), 1)
        .await
        .expect("read");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].id.to_string(), first[0].txid), (nine, 9));
    let rest = log::read_after(&app.db, first[0].log_position(), 10)
        .await
        .expect("read");
    assert_eq!(
        rest.iter()
            .map(|event| event.id.to_string())
            .collect::<Vec<_>>(),
        [ten]
    );
}

#[tokio::test]
async fn events_tail_prints_the_log_as_json_lines_from_a_position() {
    let app = TestApp::spawn().await;
    app.register_user("ann").await;
    app.register_user("bob").await;
    let positions: Vec<i64> = app
        .query_column("SELECT position FROM outbox ORDER BY position")
        .await;

    // Another test's transaction, open somewhere in the cluster, may hold the log back a moment.
    let lines = eventually(
        Duration::from_secs(5),
        "`events tail` prints the event",
        || async {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
                .args(["events", "tail", "--from", &positions[0].to_string()])
                .env("DATABASE_URL", app.database_url())
                .env("RUST_LOG", "error")
                .output()
                .await
                .expect("events tail runs");
            assert!(output.status.success(), "{output:?}");
            let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "user.registered");
    assert_eq!(lines[0]["position"], positions[1]);
    assert_eq!(lines[0]["aggregateVersion"], 1);
}

async fn position_in(txn: &sea_orm::DatabaseTransaction, id: &str) -> i64 {
    let row = txn
        .query_one_raw(sea_orm::Statement::from_string(
            txn.get_database_backend(),
            format!("SELECT position FROM outbox WHERE id = '{id}'"),
        ))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<i64>(0).expect("position")
}

/// A batch of events goes in as arrays (one statement text for any count): each event still
/// takes the next version of its own aggregate and its place in the order given.
#[tokio::test]
async fn a_batch_of_events_keeps_its_order_and_numbers_each_aggregate_on() {
    use home_visits::events::{NewEvent, catalogue::UserDeactivated, record_all};
    let app = TestApp::spawn().await;
    let ann = uuid::Uuid::now_v7();
    let bob = uuid::Uuid::now_v7();
    let about = |user| NewEvent::of(&UserDeactivated { user_id: user }).expect("an event");
    let batch = vec![about(ann), about(bob), about(ann), about(bob), about(ann)];
    let ids: Vec<String> = batch.iter().map(|event| event.id.to_string()).collect();
    let txn = app.db.begin().await.expect("transaction");
    record_all(&txn, batch)
        .await
        .expect("the batch is recorded");
    txn.commit().await.expect("commit");
    // A later batch of one aggregate goes on from where the first left it.
    let txn = app.db.begin().await.expect("transaction");
    record_all(&txn, vec![about(bob), about(bob), about(bob), about(bob)])
        .await
        .expect("the second batch is recorded");
    txn.commit().await.expect("commit");

    let stored: Vec<(String, String, i64)> = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT id::text AS id, aggregate_id::text AS aggregate_id, aggregate_version \
             FROM outbox WHERE type = 'user.deactivated' ORDER BY position",
        ))
        .await
        .expect("outbox rows")
        .iter()
        .map(|row| {
            (
                row.try_get("", "id").expect("id"),
                row.try_get("", "aggregate_id").expect("aggregate"),
                row.try_get("", "aggregate_version").expect("version"),
            )
        })
        .collect();
    let (ann, bob) = (ann.to_string(), bob.to_string());
    assert_eq!(
        stored
            .iter()
            .map(|(_, aggregate, version)| (aggregate.clone(), *version))
            .collect::<Vec<_>>(),
        vec![
            (ann.clone(), 1),
            (bob.clone(), 1),
            (ann.clone(), 2),
            (bob.clone(), 2),
            (ann, 3),
            (bob.clone(), 3),
            (bob.clone(), 4),
            (bob.clone(), 5),
            (bob, 6),
        ]
    );
    assert_eq!(
        stored[..5]
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect::<Vec<_>>(),
        ids
    );
}

/// A reader of some types gets only those, with their payloads, and the place the read reached
/// past the others, so its checkpoint moves over what it does not read.
#[tokio::test]
async fn a_reader_of_some_types_passes_over_the_rest_to_the_end_of_what_it_read() {
    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    app.requested_visit(&ann.access_token, 10).await;
    // Another test's open transaction in the same cluster may hold the horizon back a moment.
    let everything = eventually(Duration::from_secs(5), "both events readable", || async {
        let read = log::read_after(&app.db, LogPosition::default(), 100)
            .await
            .expect("read");
        (read.len() >= 2).then_some(read)
    })
    .await;
    assert_eq!(
        everything
            .iter()
            .map(|event| event.event_type.as_str())
            .collect::<Vec<_>>(),
        ["user.registered", "visit.requested"]
    );

    let users = log::read_wanted_after(&app.db, LogPosition::default(), 100, &["user.registered"])
        .await
        .expect("read");
    assert_eq!(users.events, everything[..1].to_vec());
    assert_eq!(users.len, 2);
    assert_eq!(users.end, Some(everything[1].log_position()));

    let none = log::read_wanted_after(&app.db, LogPosition::default(), 100, &["visit.expired"])
        .await
        .expect("read");
    assert!(none.events.is_empty());
    assert_eq!(none.end, Some(everything[1].log_position()));
    let after = log::read_wanted_after(
        &app.db,
        everything[1].log_position(),
        100,
        &["visit.expired"],
    )
    .await
    .expect("read");
    assert_eq!((after.len, after.end), (0, None));
}

/// Retention deletes old events, but never one a consumer reading the log has not handled: the
/// instances that prune need not be those that consume (`CONSUMERS`).
#[tokio::test]
async fn retention_keeps_what_a_log_consumer_has_not_read_yet() {
    use home_visits::events::{NewEvent, catalogue::UserDeactivated, record_all, retention};
    let app = TestApp::spawn_with(|config| {
        config.events.consumers = home_visits::config::ConsumerNames(Vec::new())
    })
    .await;
    let (ann, bob) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let about = |user| NewEvent::of(&UserDeactivated { user_id: user }).expect("an event");
    let mut read_up_to = String::new();
    for batch in [
        vec![about(ann), about(ann)],
        vec![about(bob), about(bob)],
        vec![about(ann), about(bob)],
    ] {
        if read_up_to.is_empty() {
            read_up_to = batch[1].id.to_string();
        }
        let txn = app.db.begin().await.expect("transaction");
        record_all(&txn, batch).await.expect("recorded");
        txn.commit().await.expect("commit");
    }
    let db = &app.db;
    let run = |sql: String| async move {
        db.execute_unprepared(&sql).await.expect("statement");
    };
    run("UPDATE outbox SET occurred_at = now() - interval '10 days'".to_string()).await;
    run(format!(
        "INSERT INTO event_checkpoints (name, txid, position) \
         SELECT 'consumer:behind', txid, position FROM outbox WHERE id = '{read_up_to}'"
    ))
    .await;
    let remaining = || async {
        app.db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT aggregate_id::text AS aggregate, aggregate_version FROM outbox ORDER BY position",
            ))
            .await
            .expect("outbox rows")
            .iter()
            .map(|row| {
                let aggregate: String = row.try_get("", "aggregate").expect("aggregate");
                let version: i64 = row.try_get("", "aggregate_version").expect("version");
                (aggregate, version)
            })
            .collect::<Vec<_>>()
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    let (ann, bob) = (ann.to_string(), bob.to_string());

    // Ann's first two are read and superseded; Bob's first two are not read yet.
    let deleted = retention::prune(&app.db, day, false).await.expect("pruned");
    assert_eq!(deleted, 2);
    assert_eq!(
        remaining().await,
        [
            (bob.clone(), 1),
            (bob.clone(), 2),
            (ann.clone(), 3),
            (bob.clone(), 3)
        ]
    );

    run(
        "UPDATE event_checkpoints SET (txid, position) = (SELECT txid, position FROM outbox \
         ORDER BY txid DESC, position DESC LIMIT 1) WHERE name = 'consumer:behind'"
            .to_string(),
    )
    .await;
    assert_eq!(
        retention::prune(&app.db, day, false).await.expect("pruned"),
        2
    );
    // Each aggregate's newest event stays: the next one's version is counted from it.
    assert_eq!(remaining().await, [(ann, 3), (bob, 3)]);
}
