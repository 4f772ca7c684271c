//! The `event-stream` scenario: the randomized workload with the relay on, the relay's leader
//! killed with SIGKILL and the broker restarted mid-run; then the whole stream is read back and
//! held against the outbox and the ledger.
use std::time::{Duration, Instant};

use testkit::stream::{Findings, check_stream};

use crate::{
    harness::{Harness, Verdict},
    instances::SpawnedInstance,
    nats::{NatsServer, read_stream},
    scenarios::bank::{self, BankOptions},
    scenarios::late_commit,
};

pub const STREAM: &str = "HOME_VISITS";

/// Kills the relay leader a quarter in, restarts it at 45%, restarts the broker at 60%, then holds
/// a request past its place in the log (a late commit) from 65%.
async fn inject_faults(
    harness: &Harness,
    instances: &mut [SpawnedInstance],
    nats: &mut NatsServer,
    duration: Duration,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    tokio::time::sleep_until(at(0.25).into()).await;
    let leader = leader_index(harness)
        .await
        .ok_or("no instance leads the relay")?;
    let victim = instances
        .get_mut(leader)
        .ok_or("the leader is not a spawned instance")?;
    victim.kill().await.map_err(|error| error.to_string())?;
    log.push(
        harness
            .progress
            .fault(format!("kill -9 relay leader {}", victim.url())),
    );
    tokio::time::sleep_until(at(0.45).into()).await;
    victim.restart().await.map_err(|error| error.to_string())?;
    log.push(
        harness
            .progress
            .fault(format!("restarted {}", victim.url())),
    );
    tokio::time::sleep_until(at(0.6).into()).await;
    nats.restart().await.map_err(|error| error.to_string())?;
    log.push(harness.progress.fault("kill -9 and restart of nats-server"));
    tokio::time::sleep_until(at(0.65).into()).await;
    log.push(late_commit::hold_a_request(harness, late_commit::hold_in(duration)).await?);
    Ok(log)
}

/// The index of the instance whose `/readyz` says it leads the relay.
async fn leader_index(harness: &Harness) -> Option<usize> {
    for _ in 0..100 {
        for (index, client) in harness.clients.iter().enumerate() {
            if let Some(ready) = client.readiness().await
                && ready["relay"]["leader"] == true
            {
                return Some(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until an instance reports the relay caught up with the log; gives up when the relay has
/// published nothing for [`STALLED_AFTER`] while still behind (then the stream check says what is
/// missing), or after `limit`.
pub async fn wait_until_drained(harness: &Harness, limit: Duration) -> Option<String> {
    const STALLED_AFTER: Duration = Duration::from_secs(5);
    let deadline = Instant::now() + limit;
    let mut progress = (0_u64, Instant::now());
    let mut last = String::from("no instance answered");
    while Instant::now() < deadline {
        let mut published = 0;
        for client in &harness.clients {
            if let Some(ready) = client.readiness().await {
                if ready["relay"]["lag"]["events"] == 0 {
                    return None;
                }
                published += ready["relay"]["published"].as_u64().unwrap_or(0);
                last = ready["relay"].to_string();
            }
        }
        if published != progress.0 {
            progress = (published, Instant::now());
        } else if progress.1.elapsed() >= STALLED_AFTER {
            return Some(format!("the relay stalled behind the log: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some(format!(
        "the relay did not catch up within {limit:?}: {last}"
    ))
}

pub async fn event_stream(
    harness: &Harness,
    instances: &mut [SpawnedInstance],
    nats: &mut NatsServer,
    options: &BankOptions,
) -> Verdict {
    let faults = async {
        if options.faults {
            inject_faults(harness, instances, nats, options.duration).await
        } else {
            Ok(Vec::new())
        }
    };
    let workload = bank::run_with_faults(harness, options, faults).await?;
    let findings = drain_and_check(harness, &nats.url()).await?;
    if findings.problems.is_empty() {
        Ok(format!("{}; {workload}", findings.summary))
    } else {
        Err(format!(
            "{}: {}; {workload}",
            findings.summary,
            findings.problems.join("; ")
        ))
    }
}

/// How many times [`drain_and_check`] looks again at events that are only missing.
const LOOKS: u32 = 3;

/// Lets the relay drain, reads the stream back and checks it against the outbox. Writers may
/// still be finishing when the relay first reports itself caught up (the notifications consumer
/// records `notification.added` for the workload's tail after the load ends), so when the only
/// problem is missing events the relay is given another drain, up to [`LOOKS`] looks in all: an
/// event recorded late shows up, one the relay went past without publishing stays missing.
pub async fn drain_and_check(harness: &Harness, nats_url: &str) -> Result<Findings, String> {
    let mut look = 1;
    loop {
        let behind = wait_until_drained(harness, Duration::from_secs(60)).await;
        let messages = read_stream(nats_url, STREAM)
            .await
            .map_err(|error| format!("reading the stream back: {error}"))?;
        let mut findings = check_stream(&harness.db, &messages).await?;
        findings.problems.extend(behind);
        let only_missing = findings.missing > 0 && findings.problems.len() == 1;
        if !only_missing || look == LOOKS {
            return Ok(findings);
        }
        look += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
