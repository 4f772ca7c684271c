//! The harness of `integration/` against two real `home-visits` processes sharing one database.
use std::time::Duration;

use integration::{
    SCENARIOS, bank::BankOptions, client::Client, instances::SpawnedInstance, nats::NatsServer,
    run_suite, scenarios::Harness,
};
use sea_orm::Database;
use secrecy::ExposeSecret;

use crate::helpers::fresh_database;

#[tokio::test]
async fn two_instances_on_one_database_pass_every_scenario_and_a_faulty_randomized_run() {
    let database = fresh_database().await;
    let url = database.url.expose_secret().to_string();
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_home-visits"));
    let secret = "two-instance-test-secret-of-sufficient-length";
    let mut nats = NatsServer::start().await.expect("nats-server starts");
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            SpawnedInstance::start_with(
                binary.clone(),
                0,
                &url,
                secret,
                vec![("NATS_URL".into(), nats.url())],
            )
            .await
            .expect("instance starts"),
        );
    }
    let clients = instances
        .iter()
        .map(|instance| Client::new(&instance.url()).expect("client"))
        .collect();
    let harness = Harness::new(clients, Database::connect(&url).await.expect("database"));
    let bank = BankOptions {
        duration: Duration::from_secs(6),
        seed: 20261122,
        users: 10,
        workers: 12,
        faults: true,
    };

    let report = run_suite(
        &harness,
        Some(&mut instances),
        Some(&mut nats),
        &SCENARIOS,
        &bank,
    )
    .await
    .expect("suite runs");

    println!("{}", report.table());
    assert!(report.passed(), "\n{}", report.table());
    assert_eq!(report.scenarios.len(), SCENARIOS.len());

    // What a tester and CI keep of the run: the three reports, read back.
    let dir = std::env::temp_dir().join(format!("harness-report-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("report dir");
    let run = integration::report::RunInfo {
        seed: bank.seed,
        replay: format!("integration --seed {}", bank.seed),
        service_version: None,
        instances: instances.iter().map(SpawnedInstance::url).collect(),
        started_at: chrono::Utc::now(),
        took: Duration::from_secs(1),
    };
    integration::report::write(dir.as_path(), &report, &run).expect("reports written");
    let junit = std::fs::read_to_string(dir.as_path().join("junit.xml")).expect("junit.xml");
    let parsed = quick_junit::Report::deserialize_from_str(&junit).expect("junit.xml parses");
    let cases: Vec<String> = parsed
        .test_suites
        .iter()
        .flat_map(|suite| suite.test_cases.iter().map(|case| case.name.to_string()))
        .collect();
    assert_eq!(cases.len(), SCENARIOS.len() + 6, "{cases:?}");
    for scenario in SCENARIOS {
        assert!(
            cases.iter().any(|case| case == scenario),
            "{scenario} in {cases:?}"
        );
    }
    assert_eq!(parsed.failures, 0, "{junit}");
    let page = std::fs::read_to_string(dir.as_path().join("report.html")).expect("report.html");
    assert_eq!(
        integration::report::external_references(&page),
        Vec::<String>::new()
    );
    // One chart per timed run (the randomized workloads), each with the faults it saw.
    let timed = report
        .scenarios
        .iter()
        .filter(|scenario| scenario.timeline.is_some())
        .count();
    assert!(
        timed >= 4,
        "minute-bank, event-stream, notifications-replay, live-updates"
    );
    assert_eq!(page.matches("<svg").count(), timed);
    let minute_bank = report
        .scenarios
        .iter()
        .find(|scenario| scenario.name == "minute-bank")
        .and_then(|scenario| scenario.timeline.as_ref())
        .expect("minute-bank's timeline");
    assert!(
        minute_bank
            .faults
            .iter()
            .any(|fault| fault.what.starts_with("kill -9")),
        "{:?}",
        minute_bank.faults
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.as_path().join("report.json")).expect("report.json"),
    )
    .expect("report.json parses");
    assert_eq!(json["seed"], bank.seed);
    assert_eq!(json["passed"], true);
    std::fs::remove_dir_all(&dir).ok();
}

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
    let check = || async {
        integration::invariants::check(&app.db)
            .await
            .expect("check")
    };
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
    let offenders: Vec<String> = integration::invariants::offenders(&app.db)
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
    use integration::{event_stream::check_stream, nats::StreamedMessage};
    use serde_json::json;

    use crate::helpers::TestApp;

    let app = TestApp::spawn().await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    let visit = app.requested_visit(&ann.access_token, 20).await;
    app.complete_visit(&bob.access_token, &visit).await;
    app.settled().await;
    let harness = Harness::new(
        vec![Client::new(&app.address).expect("client")],
        Database::connect(app.database_url())
            .await
            .expect("database"),
    );
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
        let harness = &harness;
        async move {
            check_stream(harness, &messages)
                .await
                .expect("checked")
                .problems
        }
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
