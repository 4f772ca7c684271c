//! The two-instance concurrency harness for home-visits. Black-box: it drives instances over HTTP
//! GraphQL only, and reads PostgreSQL only to check the invariants of the books (its faults also
//! reach the database from outside: terminated connections, a held row lock).
pub mod bank;
pub mod bench;
pub mod client;
pub mod cpu;
pub mod event_stream;
pub mod instances;
pub mod invariants;
pub mod late_commit;
pub mod live;
pub mod live_updates;
pub mod nats;
pub mod notifications_replay;
pub mod postgres_restart;
pub mod progress;
pub mod replay;
pub mod reply;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod setup;

use std::time::{Duration, Instant};

use bank::BankOptions;
use instances::SpawnedInstance;
use invariants::{Offender, Violations};
use progress::{Ticker, Timeline};
use scenarios::{Harness, Verdict};

pub const SCENARIOS: [&str; 9] = [
    "over-budget-pair",
    "over-budget-burst",
    "double-completion",
    "completions-vs-request",
    "idempotent-retries",
    "minute-bank",
    "event-stream",
    "notifications-replay",
    "live-updates",
];

/// Scenarios run only by name: they restart the PostgreSQL cluster, which other users (the tests'
/// databases) share.
pub const RESTARTING: [&str; 1] = ["postgres-restart"];

pub struct ScenarioReport {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
    pub elapsed: Duration,
    /// For the scenarios with a timed run: its outcomes per second and faults.
    pub timeline: Option<Timeline>,
}

pub struct SuiteReport {
    pub scenarios: Vec<ScenarioReport>,
    pub invariants: Violations,
    /// The rows behind `invariants` when they are broken.
    pub offenders: Vec<Offender>,
}

impl SuiteReport {
    pub fn passed(&self) -> bool {
        self.invariants.is_clean() && self.scenarios.iter().all(|scenario| scenario.passed)
    }

    pub fn table(&self) -> String {
        let mut lines = vec![format!(
            "{:<24} {:<6} {:>8}  detail",
            "scenario", "result", "time"
        )];
        for scenario in &self.scenarios {
            lines.push(format!(
                "{:<24} {:<6} {:>7.1}s  {}",
                scenario.name,
                if scenario.passed { "PASS" } else { "FAIL" },
                scenario.elapsed.as_secs_f64(),
                scenario.detail
            ));
        }
        lines.push(format!(
            "{:<24} {:<6} {:>8}  {}",
            "invariants (final)",
            if self.invariants.is_clean() {
                "PASS"
            } else {
                "FAIL"
            },
            "",
            self.invariants
        ));
        for offender in &self.offenders {
            lines.push(format!("  {offender}"));
        }
        lines.join("\n")
    }
}

/// Runs the named scenarios (or all) in order; after each, the four invariants must hold.
pub async fn run_suite(
    harness: &Harness,
    mut instances: Option<&mut Vec<SpawnedInstance>>,
    mut nats: Option<&mut nats::NatsServer>,
    selected: &[&'static str],
    bank: &BankOptions,
) -> anyhow::Result<SuiteReport> {
    let mut reports = Vec::new();
    // Judged by what each scenario adds: once broken, the books stay broken for the ones after.
    let mut before = invariants::check(&harness.db).await?;
    for (index, &name) in selected.iter().enumerate() {
        let started = Instant::now();
        let ticker = Ticker::start(
            harness.progress.clone(),
            format!("[{}/{}] {name}", index + 1, selected.len()),
        );
        let verdict: Verdict = match name {
            "over-budget-pair" => scenarios::over_budget_pair(harness).await,
            "over-budget-burst" => scenarios::over_budget_burst(harness).await,
            "double-completion" => scenarios::double_completion(harness).await,
            "completions-vs-request" => scenarios::completions_racing_a_request(harness).await,
            "idempotent-retries" => scenarios::idempotent_retries(harness).await,
            "minute-bank" => bank::minute_bank(harness, instances.as_deref_mut(), bank).await,
            "event-stream" => match (instances.as_deref_mut(), nats.as_deref_mut()) {
                (Some(instances), Some(nats)) => {
                    event_stream::event_stream(harness, instances, nats, bank).await
                }
                _ => {
                    Err("needs instances and a broker the harness started itself (--spawn)".into())
                }
            },
            "notifications-replay" => {
                notifications_replay::notifications_replay(harness, nats.as_deref(), bank).await
            }
            "live-updates" => live_updates::live_updates(harness, bank).await,
            "postgres-restart" => {
                let binary = instances
                    .as_deref()
                    .and_then(|instances| instances.first())
                    .map(|instance| instance.binary().to_path_buf());
                postgres_restart::postgres_restart(
                    harness,
                    binary.as_deref(),
                    nats.as_deref(),
                    bank,
                )
                .await
            }
            other => Err(format!("unknown scenario {other}")),
        };
        drop(ticker);
        let after = invariants::check(&harness.db).await?;
        let newly_broken = !after.is_clean() && after != before;
        before = after;
        let (passed, detail) = match verdict {
            Ok(detail) if !newly_broken => (true, detail),
            Ok(detail) => (false, format!("invariants broken: {after}; {detail}")),
            Err(reason) if !newly_broken => (false, reason),
            Err(reason) => (false, format!("invariants broken: {after}; {reason}")),
        };
        println!(
            "[{}/{}] {name}: {} in {:.1}s",
            index + 1,
            selected.len(),
            if passed { "PASS" } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
        reports.push(ScenarioReport {
            name,
            passed,
            detail,
            elapsed: started.elapsed(),
            timeline: harness.progress.take_timeline(),
        });
    }
    let invariants = invariants::check(&harness.db).await?;
    let offenders = if invariants.is_clean() {
        Vec::new()
    } else {
        invariants::offenders(&harness.db).await?
    };
    Ok(SuiteReport {
        scenarios: reports,
        invariants,
        offenders,
    })
}

/// `all` or one scenario name, as the static names the report uses.
pub fn select_scenarios(choice: &str) -> anyhow::Result<Vec<&'static str>> {
    if choice == "all" {
        return Ok(SCENARIOS.to_vec());
    }
    SCENARIOS
        .iter()
        .chain(RESTARTING.iter())
        .find(|name| **name == choice)
        .map(|name| vec![*name])
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown scenario `{choice}`; one of: all, {}, and (by name only) {}",
                SCENARIOS.join(", "),
                RESTARTING.join(", ")
            )
        })
}

/// Drops and re-creates the database a PostgreSQL URL names (connecting to `postgres` beside it).
pub async fn recreate_database(database_url: &str) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database};
    let mut admin_url = reqwest::Url::parse(database_url)?;
    let name = admin_url.path().trim_start_matches('/').to_string();
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "the database URL needs a plain database name (letters, digits, _): {name}"
    );
    admin_url.set_path("/postgres");
    let admin = Database::connect(admin_url.as_str()).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    Ok(())
}
