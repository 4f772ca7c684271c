//! The `event-stream` scenario: the randomized workload with the relay on, the relay's leader
//! killed with SIGKILL and the broker restarted mid-run; then the whole stream is read back and
//! held against the outbox and the ledger.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Statement};

use crate::{
    bank::{self, BankOptions},
    instances::SpawnedInstance,
    late_commit,
    nats::{NatsServer, StreamedMessage, read_stream},
    scenarios::{Harness, Verdict},
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

pub struct Findings {
    pub summary: String,
    pub problems: Vec<String>,
    /// Outbox events not on the stream.
    pub missing: usize,
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
        let mut findings = check_stream(harness, &messages).await?;
        findings.problems.extend(behind);
        let only_missing = findings.missing > 0 && findings.problems.len() == 1;
        if !only_missing || look == LOOKS {
            return Ok(findings);
        }
        look += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every outbox event on the stream exactly once, nothing else on it, each aggregate's versions
/// gapless and in order, and the completed visits' credits and fees equal to the ledger's.
pub async fn check_stream(
    harness: &Harness,
    messages: &[StreamedMessage],
) -> Result<Findings, String> {
    let outbox: Vec<String> = harness
        .db
        .query_all_raw(Statement::from_string(
            harness.db.get_database_backend(),
            "SELECT id::text AS id FROM outbox",
        ))
        .await
        .map_err(|error| error.to_string())?
        .iter()
        .filter_map(|row| row.try_get::<String>("", "id").ok())
        .collect();
    let ledger = harness
        .db
        .query_one_raw(Statement::from_string(
            harness.db.get_database_backend(),
            "SELECT count(*) AS paid, COALESCE(sum(pal_credit), 0)::int8 AS credits, \
                    COALESCE(sum(fee), 0)::int8 AS fees FROM transactions",
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no ledger totals")?;
    let ledger_totals: (i64, i64, i64) = (
        ledger
            .try_get("", "paid")
            .map_err(|error| error.to_string())?,
        ledger
            .try_get("", "credits")
            .map_err(|error| error.to_string())?,
        ledger
            .try_get("", "fees")
            .map_err(|error| error.to_string())?,
    );

    let mut problems = Vec::new();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut versions: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut streamed_totals = (0_i64, 0_i64, 0_i64);
    for message in messages {
        let envelope = &message.envelope;
        let id = envelope["id"].as_str().unwrap_or_default();
        *seen.entry(id).or_default() += 1;
        if message.message_id.as_deref() != Some(id) {
            problems.push(format!(
                "message {} has Nats-Msg-Id {:?}",
                message.sequence, message.message_id
            ));
        }
        versions
            .entry((
                envelope["aggregateType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                envelope["aggregateId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
            .or_default()
            .push(envelope["aggregateVersion"].as_i64().unwrap_or(0));
        if envelope["type"] == "visit.completed" {
            streamed_totals.0 += 1;
            streamed_totals.1 += envelope["payload"]["palCredit"].as_i64().unwrap_or(0);
            streamed_totals.2 += envelope["payload"]["fee"].as_i64().unwrap_or(0);
        }
    }
    let duplicated: Vec<&&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    if !duplicated.is_empty() {
        problems.push(format!(
            "{} events on the stream more than once (e.g. {})",
            duplicated.len(),
            duplicated[0]
        ));
    }
    let recorded: HashSet<&str> = outbox.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = recorded
        .iter()
        .filter(|id| !seen.contains_key(**id))
        .collect();
    let missing_count = missing.len();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} outbox events missing from the stream (e.g. {})",
            missing.len(),
            recorded.len(),
            missing[0]
        ));
    }
    let phantoms = seen.keys().filter(|id| !recorded.contains(*id)).count();
    if phantoms > 0 {
        problems.push(format!(
            "{phantoms} events on the stream that the outbox never recorded"
        ));
    }
    let out_of_order: Vec<String> = versions
        .iter()
        .filter(|(_, found)| {
            let mut unique = (*found).clone();
            unique.dedup();
            unique
                .iter()
                .enumerate()
                .any(|(index, version)| *version != index as i64 + 1)
        })
        .map(|((kind, id), found)| format!("{kind} {id}: {found:?}"))
        .collect();
    if !out_of_order.is_empty() {
        problems.push(format!(
            "{} aggregates with versions out of order or with gaps (e.g. {})",
            out_of_order.len(),
            out_of_order[0]
        ));
    }
    if streamed_totals != ledger_totals {
        problems.push(format!(
            "visit.completed on the stream (count, credits, fees) {streamed_totals:?} != ledger {ledger_totals:?}"
        ));
    }
    Ok(Findings {
        summary: format!(
            "{} messages for {} outbox events, {} aggregates, {} completions worth {} + {} fee",
            messages.len(),
            recorded.len(),
            versions.len(),
            streamed_totals.0,
            streamed_totals.1,
            streamed_totals.2
        ),
        problems,
        missing: missing_count,
    })
}
