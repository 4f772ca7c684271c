//! The checkers the harness judges a run by (the books' invariants, the event stream against the
//! outbox) catch each kind of fault they are there for.
use sea_orm::Database;

#[tokio::test]
async fn the_invariant_checker_reports_each_kind_of_broken_book() {
    use sea_orm::ConnectionTrait;

    use crate::helpers::TestApp;

    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit_id = app.requested_visit(&ann.access_token, 30).await;
    app.complete_visit(&bob.access_token, &visit_id).await;
    app.requested_visit(&ann.access_token, 60).await;
    let check = || async { testkit::invariants::check(&app.db).await.expect("check") };
    assert!(check().await.is_clean());

    app.db
        .execute_unprepared(&format!(
            "UPDATE balances SET minutes = 10 WHERE user_id = '{}'",
            ann.id
        ))
        .await
        .expect("tamper");
    let broken = check().await;
    assert_eq!(broken.overcommitted_members, 1, "{broken}");
    assert_eq!(broken.conservation_gap, 10 - 90, "{broken}");
    assert_eq!(broken.unexplained_balances, 1, "{broken}");
    // And the rows behind the counts, with what the books should say.
    let offenders: Vec<String> = testkit::invariants::offenders(&app.db)
        .await
        .expect("offenders")
        .iter()
        .map(ToString::to_string)
        .collect();
    let ann_row = format!("member {}", ann.id);
    assert_eq!(
        offenders,
        [
            format!("over-committed member: {ann_row} expected outstanding <= balance 10, found outstanding 60"),
            "conservation gap: books expected balances + fees = grants 240, found balances + fees 160".to_string(),
            format!("unexplained balance: {ann_row} expected balance 90 (grant - debits + credits), found balance 10"),
        ]
    );

    app.db
        .execute_unprepared(&format!(
            "UPDATE visits SET status = 'REQUESTED', pal_id = NULL WHERE id = '{visit_id}'"
        ))
        .await
        .expect("tamper");
    assert_eq!(check().await.completion_mismatches, 1);
}

#[tokio::test]
async fn the_stream_checker_reports_missing_duplicated_and_disordered_events() {
    use serde_json::json;
    use testkit::{nats::StreamedMessage, stream::check_stream};

    use crate::helpers::TestApp;

    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 20).await;
    app.complete_visit(&bob.access_token, &visit).await;
    app.settled().await;
    let db = Database::connect(app.database_url())
        .await
        .expect("database");
    let rows: Vec<String> = app
        .query_column(
            "SELECT json_build_object('id', id, 'type', type, 'aggregateType', aggregate_type, \
             'aggregateId', aggregate_id, 'aggregateVersion', aggregate_version, 'payload', payload)::text \
             FROM outbox ORDER BY txid, position",
        )
        .await;
    let faithful: Vec<StreamedMessage> = rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let envelope: serde_json::Value = serde_json::from_str(row).expect("JSON");
            StreamedMessage {
                sequence: index as u64 + 1,
                subject: String::new(),
                message_id: envelope["id"].as_str().map(String::from),
                envelope,
            }
        })
        .collect();
    // Registrations, request, completion, transfer, and the two notifications they made.
    assert_eq!(faithful.len(), 7);
    let problems = |messages: Vec<StreamedMessage>| {
        let db = &db;
        async move { check_stream(db, &messages).await.expect("checked").problems }
    };

    assert_eq!(problems(faithful.clone()).await, Vec::<String>::new());
    let mut lost = faithful.clone();
    lost.remove(3);
    let lost = problems(lost).await;
    assert!(
        lost.iter().any(|p| p.contains("missing from the stream")),
        "{lost:?}"
    );
    assert!(
        lost.iter().any(|p| p.contains("visit.completed")),
        "{lost:?}"
    );
    let mut twice = faithful.clone();
    twice.push(faithful[2].clone());
    let twice = problems(twice).await;
    assert!(
        twice.iter().any(|p| p.contains("more than once")),
        "{twice:?}"
    );
    let mut swapped = faithful.clone();
    swapped.swap(2, 3);
    let swapped = problems(swapped).await;
    assert!(
        swapped.iter().any(|p| p.contains("out of order")),
        "{swapped:?}"
    );
    let mut forged = faithful;
    forged[0].envelope["id"] = json!(uuid::Uuid::new_v4().to_string());
    let forged = problems(forged).await;
    assert!(
        forged.iter().any(|p| p.contains("never recorded")),
        "{forged:?}"
    );
}
