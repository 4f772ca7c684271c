//! The randomized minute-bank run: many users requesting, accepting, completing and cancelling at
//! once on every instance for a while, with faults injected, then the books are checked.
use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::ConnectionTrait;

use crate::{
    client::{Client, Outcome, Session},
    harness::{Harness, Verdict},
    instances::SpawnedInstance,
    progress::Progress,
};

#[derive(Debug, Clone, Copy)]
pub struct BankOptions {
    pub duration: Duration,
    pub seed: u64,
    pub users: usize,
    pub workers: usize,
    pub faults: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Request,
    Accept,
    Complete,
    Cancel,
}

#[derive(Default)]
struct Tally {
    /// (operation, outcome) -> count; outcome is `ok` or the error code.
    counts: BTreeMap<(Operation, String), u64>,
}

/// `ok`, or the error code (with its retryable marker).
fn outcome_code<T>(outcome: &Outcome<T>) -> String {
    match outcome {
        Ok(_) => "ok".to_string(),
        Err(failure) => failure.label(),
    }
}

impl Tally {
    fn record<T>(&mut self, operation: Operation, outcome: &Outcome<T>) {
        *self
            .counts
            .entry((operation, outcome_code(outcome)))
            .or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (key, count) in other.counts {
            *self.counts.entry(key).or_default() += count;
        }
    }

    fn count(&self, operation: Operation, label: &str) -> u64 {
        self.counts
            .get(&(operation, label.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn summary(&self) -> String {
        let mut by_operation: BTreeMap<Operation, Vec<String>> = BTreeMap::new();
        for ((operation, label), count) in &self.counts {
            by_operation
                .entry(*operation)
                .or_default()
                .push(format!("{label} {count}"));
        }
        by_operation
            .iter()
            .map(|(operation, outcomes)| format!("{operation:?}: {}", outcomes.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Known visits: (visit id, index of its member). Bounded so old ids age out.
struct VisitPool {
    visits: Mutex<Vec<(String, usize)>>,
}

impl VisitPool {
    fn add(&self, visit_id: String, member: usize) {
        if let Ok(mut visits) = self.visits.lock() {
            if visits.len() >= 400 {
                visits.remove(0);
            }
            visits.push((visit_id, member));
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Option<(String, usize)> {
        let visits = self.visits.lock().ok()?;
        if visits.is_empty() {
            return None;
        }
        Some(visits[rng.random_range(0..visits.len())].clone())
    }
}

/// Sends to one instance, and to another if the first cannot be reached (it may be down).
async fn with_failover<T, F, Fut>(clients: &[Client], first: usize, call: F) -> Outcome<T>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Outcome<T>>,
{
    let outcome = call(clients[first % clients.len()].clone()).await;
    match outcome {
        Err(failure) if failure.is_transport() && clients.len() > 1 => {
            call(clients[(first + 1) % clients.len()].clone()).await
        }
        other => other,
    }
}

async fn worker(
    clients: &[Client],
    progress: &Progress,
    users: &[Session],
    pool: &VisitPool,
    seed: u64,
    deadline: Instant,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut requests = 0_u64;
    while Instant::now() < deadline {
        let instance = rng.random_range(0..clients.len());
        let actor = rng.random_range(0..users.len());
        let token = users[actor].token.clone();
        let roll = rng.random_range(0..100);
        if roll < 40 {
            let minutes = rng.random_range(5..=45);
            requests += 1;
            // Keyed, so a retry on the other instance after a lost answer books nothing twice.
            let key = format!("{seed}-{requests}");
            let outcome = with_failover(clients, instance, |client| {
                let (token, key) = (token.clone(), key.clone());
                async move { client.request_visit(&token, minutes, Some(&key)).await }
            })
            .await;
            if let Ok(visit_id) = &outcome {
                pool.add(visit_id.clone(), actor);
            }
            tally.record(Operation::Request, &outcome);
            progress.record(&outcome_code(&outcome));
        } else if let Some((visit_id, member)) = pool.pick(&mut rng) {
            let (operation, outcome) = if roll < 55 {
                let outcome = with_failover(clients, instance, |client| {
                    let (token, visit_id) = (token.clone(), visit_id.clone());
                    async move { client.accept_visit(&token, &visit_id).await }
                })
                .await;
                (Operation::Accept, outcome)
            } else if roll < 90 {
                let outcome = with_failover(clients, instance, |client| {
                    let (token, visit_id) = (token.clone(), visit_id.clone());
                    async move { client.complete_visit(&token, &visit_id).await.map(drop) }
                })
                .await;
                (Operation::Complete, outcome)
            } else {
                let member_token = users[member].token.clone();
                let outcome = with_failover(clients, instance, |client| {
                    let (token, visit_id) = (member_token.clone(), visit_id.clone());
                    async move { client.cancel_visit(&token, &visit_id).await }
                })
                .await;
                (Operation::Cancel, outcome)
            };
            tally.record(operation, &outcome);
            progress.record(&outcome_code(&outcome));
        }
    }
    tally
}

/// Kills the last spawned instance a quarter of the way in and restarts it at half time; cuts the
/// service's database connections at 70%.
async fn inject_faults(
    harness: &Harness,
    instances: Option<&mut Vec<SpawnedInstance>>,
    duration: Duration,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    if let Some(instances) = instances
        && let Some(victim) = instances.last_mut()
    {
        tokio::time::sleep_until(at(0.25).into()).await;
        victim.kill().await.map_err(|error| error.to_string())?;
        log.push(harness.progress.fault(format!("kill -9 {}", victim.url())));
        tokio::time::sleep_until(at(0.5).into()).await;
        victim.restart().await.map_err(|error| error.to_string())?;
        log.push(
            harness
                .progress
                .fault(format!("restarted {}", victim.url())),
        );
    }
    tokio::time::sleep_until(at(0.7).into()).await;
    let terminated = harness
        .db
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'home-visits%'",
        )
        .await
        .map_err(|error| error.to_string())?;
    log.push(harness.progress.fault(format!(
        "pg_terminate_backend on {} service connections",
        terminated.rows_affected()
    )));
    Ok(log)
}

pub async fn minute_bank(
    harness: &Harness,
    instances: Option<&mut Vec<SpawnedInstance>>,
    options: &BankOptions,
) -> Verdict {
    let faults = async {
        if options.faults {
            inject_faults(harness, instances, options.duration).await
        } else {
            Ok(Vec::new())
        }
    };
    run_with_faults(harness, options, faults).await
}

/// The randomized workload on every instance while `faults` runs; returns a summary, or why the
/// run proves nothing (non-retryable errors, an instance that no longer serves, too little done).
pub async fn run_with_faults(
    harness: &Harness,
    options: &BankOptions,
    faults: impl Future<Output = Result<Vec<String>, String>>,
) -> Verdict {
    let users = harness.new_users("bank", options.users).await?;
    run_workload(harness, options, &users, faults).await
}

/// [`run_with_faults`] by these users (some scenarios watch them).
pub async fn run_workload(
    harness: &Harness,
    options: &BankOptions,
    users: &[Session],
    faults: impl Future<Output = Result<Vec<String>, String>>,
) -> Verdict {
    let pool = VisitPool {
        visits: Mutex::new(Vec::new()),
    };
    harness.progress.begin_run(options.duration);
    let deadline = Instant::now() + options.duration;
    let workers = join_all((0..options.workers).map(|index| {
        let seed = options
            .seed
            .wrapping_add(u64::try_from(index).unwrap_or(0).wrapping_mul(0x9E37_79B9));
        worker(
            &harness.clients,
            &harness.progress,
            users,
            &pool,
            seed,
            deadline,
        )
    }));
    let (tallies, fault_log) = tokio::join!(workers, faults);
    let fault_log = fault_log?;
    let mut tally = Tally::default();
    for worker_tally in tallies {
        tally.merge(worker_tally);
    }

    // After the faults every instance must serve again.
    for (index, client) in harness.clients.iter().enumerate() {
        let probe = client.balance(&users[index % users.len()].token).await;
        if let Err(failure) = probe {
            return Err(format!(
                "instance {} does not serve after the run: {failure:?}",
                client.base_url
            ));
        }
    }
    let internal: u64 = [
        Operation::Request,
        Operation::Accept,
        Operation::Complete,
        Operation::Cancel,
    ]
    .iter()
    .map(|operation| tally.count(*operation, "INTERNAL"))
    .sum();
    let detail = format!(
        "seed {}, {} users, {} workers, {:?}; {}{}",
        options.seed,
        options.users,
        options.workers,
        options.duration,
        tally.summary(),
        if fault_log.is_empty() {
            String::new()
        } else {
            format!("; faults: {}", fault_log.join(", "))
        }
    );
    if internal > 0 {
        return Err(format!(
            "{internal} non-retryable INTERNAL errors; {detail}"
        ));
    }
    if tally.count(Operation::Request, "ok") == 0 || tally.count(Operation::Complete, "ok") == 0 {
        return Err(format!(
            "the workload did too little to prove anything; {detail}"
        ));
    }
    Ok(detail)
}
