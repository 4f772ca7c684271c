//! The suite: the chosen scenarios in order, the books checked after each, and what a tester reads
//! of it.
use std::time::{Duration, Instant};

use crate::{
    harness::{Harness, Verdict},
    instances::SpawnedInstance,
    invariants::{self, Offender, Violations},
    nats::NatsServer,
    progress::{Ticker, Timeline},
    scenarios::{self, Needs, Scenario, bank::BankOptions},
};

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

/// Runs the scenarios in order; after each, the four invariants must hold.
pub async fn run_suite(
    harness: &Harness,
    mut instances: Option<&mut Vec<SpawnedInstance>>,
    mut nats: Option<&mut NatsServer>,
    selected: &[Scenario],
    bank: &BankOptions,
) -> anyhow::Result<SuiteReport> {
    let mut reports = Vec::new();
    // Judged by what each scenario adds: once broken, the books stay broken for the ones after.
    let mut before = invariants::check(&harness.db).await?;
    for (index, &scenario) in selected.iter().enumerate() {
        let name = scenario.name();
        let started = Instant::now();
        let ticker = Ticker::start(
            harness.progress.clone(),
            format!("[{}/{}] {name}", index + 1, selected.len()),
        );
        let verdict: Verdict = scenario
            .run(harness, instances.as_deref_mut(), nats.as_deref_mut(), bank)
            .await;
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

/// What `--scenario` asks for: `all`, or one scenario by name.
pub fn select_scenarios(choice: &str) -> anyhow::Result<Vec<Scenario>> {
    if choice == "all" {
        return Ok(Scenario::ALL.to_vec());
    }
    let names = |scenarios: &[Scenario]| {
        scenarios
            .iter()
            .map(|scenario| scenario.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Scenario::named(choice)
        .map(|scenario| vec![scenario])
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown scenario `{choice}`; one of: all, {}, and (by name only) {}",
                names(&Scenario::ALL),
                names(&Scenario::BY_NAME_ONLY)
            )
        })
}

/// The scenarios of `selected` that can run against what the harness was given, and the ones left
/// out with why. Only `all` leaves any out: a scenario asked for by name that cannot run fails.
pub fn runnable(
    selected: Vec<Scenario>,
    all: bool,
    spawned: bool,
) -> (Vec<Scenario>, Vec<(Scenario, &'static str)>) {
    let mut left_out = Vec::new();
    let runnable = selected
        .into_iter()
        .filter(|scenario| match scenario.needs() {
            Needs::SpawnedInstancesAndBroker if all && !spawned => {
                left_out.push((*scenario, scenarios::NEEDS_SPAWN));
                false
            }
            _ => true,
        })
        .collect();
    (runnable, left_out)
}
