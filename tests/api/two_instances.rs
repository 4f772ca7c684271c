//! The harness of `integration/` against two real `home-visits` processes sharing one database.
use std::time::Duration;

use integration::{
    SCENARIOS, bank::BankOptions, client::Client, instances::SpawnedInstance, run_suite,
    scenarios::Harness,
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
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            SpawnedInstance::start(binary.clone(), 0, &url, secret)
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

    let report = run_suite(&harness, Some(&mut instances), &SCENARIOS, &bank)
        .await
        .expect("suite runs");

    println!("{}", report.table());
    assert!(report.passed(), "\n{}", report.table());
    assert_eq!(report.scenarios.len(), SCENARIOS.len());
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

    app.db
        .execute_unprepared(&format!(
            "UPDATE visits SET status = 'REQUESTED' WHERE id = '{visit_id}'"
        ))
        .await
        .expect("tamper");
    assert_eq!(check().await.completion_mismatches, 1);
}
