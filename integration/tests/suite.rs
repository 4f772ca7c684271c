//! The harness against two real `home-visits` processes sharing one database: every scenario
//! passes on the sound build, and what a tester keeps of the run reads back.
use std::{path::PathBuf, time::Duration};

use integration::{
    client::Client,
    harness::Harness,
    instances::SpawnedInstance,
    nats::NatsServer,
    recreate_database,
    scenarios::{Scenario, bank::BankOptions},
    setup,
    suite::run_suite,
};
use sea_orm::Database;

/// The service binary `cargo test --workspace` built beside this test (in the same profile). Run
/// alone (`cargo test -p integration`), this test finds whatever that binary was last built from:
/// build it first.
fn service_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target profile directory");
    let binary = profile_dir.join("home-visits");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build --bin home-visits`; `cargo test --workspace` does)",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn two_instances_on_one_database_pass_every_scenario_and_a_faulty_randomized_run() {
    let binary = service_binary();
    // The prefix of the service's test databases, so a crashed run's leftover is swept with theirs.
    let name = format!("hvtest_suite_{}", uuid::Uuid::new_v4().simple());
    // On `DATABASE_URL`'s server when it is set, as the service's tests do; else on the local one.
    let url = match std::env::var("DATABASE_URL") {
        Ok(server) if !server.trim().is_empty() => {
            let mut url = reqwest::Url::parse(&server).expect("DATABASE_URL is a URL");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        _ => setup::local_database(&binary, &name)
            .await
            .expect("the local PostgreSQL"),
    };
    recreate_database(&url).await.expect("a fresh database");
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
    let harness = Harness::new(
        clients,
        Database::connect(&url).await.expect("database"),
        &url,
    );
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
        &Scenario::ALL,
        &bank,
    )
    .await
    .expect("suite runs");

    println!("{}", report.table());
    assert!(report.passed(), "\n{}", report.table());
    assert_eq!(report.scenarios.len(), Scenario::ALL.len());

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
        left_out: Vec::new(),
    };
    integration::report::write(dir.as_path(), &report, &run).expect("reports written");
    let junit = std::fs::read_to_string(dir.as_path().join("junit.xml")).expect("junit.xml");
    let parsed = quick_junit::Report::deserialize_from_str(&junit).expect("junit.xml parses");
    let cases: Vec<String> = parsed
        .test_suites
        .iter()
        .flat_map(|suite| suite.test_cases.iter().map(|case| case.name.to_string()))
        .collect();
    assert_eq!(cases.len(), Scenario::ALL.len() + 6, "{cases:?}");
    for scenario in Scenario::ALL {
        assert!(
            cases.iter().any(|case| case == scenario.name()),
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
    for instance in &mut instances {
        instance.kill().await.ok();
    }
    integration::drop_database(&url).await.ok();
}
