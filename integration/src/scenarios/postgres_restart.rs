//! The `postgres-restart` scenario: PostgreSQL itself stopped and started again under the mixed
//! two-instance load, the relay on. Every instance must say so on `/readyz` (503) and come back
//! (200) without being restarted; clients see only retryable errors meanwhile; then a late commit,
//! and the books and the whole event stream are checked as in `event-stream`.
//!
//! It restarts the project-local cluster through the service's own `home-visits db stop` and
//! `db start` (same environment, so the same `LOCAL_POSTGRES_DIR` and port), so it needs the
//! harness to have spawned the instances from that binary and the database to be on that cluster.
//! It is not part of `all`: the tests' databases live on that cluster too.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    harness::{Harness, Verdict},
    nats::NatsServer,
    scenarios::bank::{self, BankOptions},
    scenarios::event_stream::drain_and_check,
    scenarios::late_commit,
};

/// What `/readyz` said on every instance while the database was away and after.
#[derive(Default)]
struct Readiness {
    saw_unavailable: Vec<bool>,
    back_after: Option<Duration>,
}

async fn cluster(binary: &Path, action: &str) -> Result<String, String> {
    let output = tokio::process::Command::new(binary)
        .args(["db", action])
        .output()
        .await
        .map_err(|error| format!("{} db {action}: {error}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} db {action} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The port of a PostgreSQL URL.
fn port_of(url: &str) -> Option<u16> {
    reqwest::Url::parse(url).ok()?.port()
}

/// Checks the database is on the cluster `binary db start` manages, before any load.
pub async fn check_cluster(binary: &Path, database_url: &str) -> Result<(), String> {
    let managed = cluster(binary, "start").await?;
    if port_of(&managed) != port_of(database_url) {
        return Err(format!(
            "postgres-restart restarts the local cluster (`home-visits db start`: {}), but the \
             database is elsewhere (port {:?}); run it on the local cluster",
            managed.rsplit_once('@').map_or("?", |(_, at)| at),
            port_of(database_url)
        ));
    }
    Ok(())
}

/// Stops the cluster at 30% of the run, waits until every instance reports it, starts it again,
/// waits until every instance is ready again; a late commit follows at once.
async fn inject_faults(
    harness: &Harness,
    binary: &Path,
    duration: Duration,
    readiness: &mut Readiness,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    tokio::time::sleep_until(at(0.3).into()).await;
    cluster(binary, "stop").await?;
    log.push(
        harness
            .progress
            .fault("PostgreSQL stopped (pg_ctl stop -m fast)"),
    );
    readiness.saw_unavailable = vec![false; harness.clients.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while readiness.saw_unavailable.iter().any(|saw| !saw) && Instant::now() < deadline {
        for (index, client) in harness.clients.iter().enumerate() {
            // A 503 said by the instance, not an instance that stopped answering.
            if client.readiness_status().await == Some(503) {
                readiness.saw_unavailable[index] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster(binary, "start").await?;
    let restarted = Instant::now();
    log.push(harness.progress.fault("PostgreSQL started again"));
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let mut ready = true;
        for client in &harness.clients {
            ready &= client.is_ready().await;
        }
        if ready {
            readiness.back_after = Some(restarted.elapsed());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At once, while the load still runs (how long the restart took varies).
    let hold = late_commit::hold_in(duration);
    if Instant::now() + hold >= at(1.0) {
        return Err(format!(
            "the restart left no time for the late commit in a {duration:?} run: run it longer"
        ));
    }
    log.push(late_commit::hold_a_request(harness, hold).await?);
    Ok(log)
}

pub async fn postgres_restart(
    harness: &Harness,
    binary: Option<&Path>,
    nats: Option<&NatsServer>,
    options: &BankOptions,
) -> Verdict {
    let (Some(binary), Some(nats)) = (binary, nats) else {
        return Err("needs instances and a broker the harness started itself (--spawn)".into());
    };
    let mut readiness = Readiness::default();
    let faults = inject_faults(harness, binary, options.duration, &mut readiness);
    let workload = bank::run_with_faults(harness, options, faults).await?;
    let mut problems = Vec::new();
    for (index, saw) in readiness.saw_unavailable.iter().enumerate() {
        if !saw {
            problems.push(format!(
                "{} never answered 503 on /readyz while PostgreSQL was down",
                harness.clients[index].base_url
            ));
        }
    }
    let Some(back_after) = readiness.back_after else {
        return Err(format!(
            "the instances were not all ready 30 s after PostgreSQL came back; {workload}"
        ));
    };
    // The relay catches up from its checkpoint; then the stream must be the log, exactly.
    let findings = drain_and_check(harness, &nats.url()).await?;
    problems.extend(findings.problems);
    let detail = format!(
        "every instance answered 503 while PostgreSQL was down and 200 {:.1}s after it came back; {}; {workload}",
        back_after.as_secs_f64(),
        findings.summary
    );
    if problems.is_empty() {
        Ok(detail)
    } else {
        Err(format!("{}; {detail}", problems.join("; ")))
    }
}
