//! The `replica` scenario: two instances reading from a streaming standby (`DATABASE_READ_URL`)
//! of a primary, both clusters the harness's own (`initdb`, then `pg_basebackup -R`), no broker,
//! so the live feed reads the log through the replica too. The `live-updates` check runs (the
//! workload, a late commit, every subscription held against the outbox) while, in turn, the
//! standby's replay is paused and resumed, held 300 ms behind, and the standby is stopped and
//! started again; all the while a member writes and at once reads their own list, which must
//! always show the write.
//! Reads must have gone to the standby while it kept up, and the books must balance.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use testkit::pg_cluster::Cluster;

use crate::{
    client::{Client, Session},
    harness::{Harness, Verdict},
    invariants,
    scenarios::{NEEDS_SPAWN, bank::BankOptions, live_updates, own_stand::OwnStand},
};

const DATABASE: &str = "home_visits";

pub async fn replica(suite: &Harness, binary: Option<&Path>, options: &BankOptions) -> Verdict {
    let binary = binary.ok_or(NEEDS_SPAWN)?;
    let primary = Cluster::primary(DATABASE)
        .await
        .map_err(|error| format!("a primary of its own: {error:#}"))?;
    let standby = Cluster::standby_of(&primary)
        .await
        .map_err(|error| format!("a standby of it: {error:#}"))?;
    let database_url = primary.url(DATABASE);
    let env = vec![("DATABASE_READ_URL".to_string(), standby.url(DATABASE))];
    let stand = OwnStand::start(suite, binary, &database_url, &database_url, env).await?;
    let outcome = async {
        let harness = &stand.harness;
        let writer = harness.new_user("own-writes").await?;
        let replica_reads_before = reads_served_by_replica(harness).await;
        // The live-updates check first sets its sockets up on a quiet system; the checker and
        // the faults start with its workload.
        let alongside = async {
            let started = run_started(harness).await?;
            // Done well before the workload: the live-updates check reads the run's events when
            // its load ends, and a write of the checker's after that would be none of the run's.
            let deadline = started + options.duration.mul_f64(0.8);
            let faults = async {
                if options.faults {
                    inject_faults(harness, &standby, started, options.duration).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (own_writes, faults) =
                tokio::join!(own_writes_until(harness, &writer, deadline), faults);
            Ok::<_, String>((own_writes, faults))
        };
        let (live, alongside) = tokio::join!(
            live_updates::live_updates(harness, None, options),
            alongside
        );
        let (own_writes, faults) = alongside?;
        let faults = faults?;
        let own_writes = own_writes?;
        let live = live?;
        let on_replica = reads_served_by_replica(harness).await - replica_reads_before;
        if on_replica == 0.0 {
            return Err(
                "no read went to the standby, though it kept up for most of the run".into(),
            );
        }
        let books = invariants::check(&harness.db)
            .await
            .map_err(|error| format!("checking the books: {error:#}"))?;
        if !books.is_clean() {
            return Err(format!("invariants broken: {books}"));
        }
        Ok(format!(
            "{own_writes}; {on_replica} reads served by the standby; books balanced; faults: {}; \
             live updates: {live}",
            faults.join(", ")
        ))
    }
    .await;
    stand.stop().await;
    outcome
}

/// Pauses the standby's replay at 10% and resumes it at 22%; holds its replay 300 ms behind what
/// it receives from 30% to 45% (inside `DATABASE_READ_MAX_LAG_MS`, so it stays in use: only the
/// read fence keeps the writer's reads off it then); stops it at 60% and starts it at 78%.
async fn inject_faults(
    harness: &Harness,
    standby: &Cluster,
    started: Instant,
    duration: Duration,
) -> Result<Vec<String>, String> {
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    tokio::time::sleep_until(at(0.1).into()).await;
    on_standby(standby, &["SELECT pg_wal_replay_pause()"]).await?;
    log.push(harness.progress.fault("standby replay paused"));
    tokio::time::sleep_until(at(0.22).into()).await;
    on_standby(standby, &["SELECT pg_wal_replay_resume()"]).await?;
    log.push(harness.progress.fault("standby replay resumed"));
    tokio::time::sleep_until(at(0.3).into()).await;
    let trail = [
        "ALTER SYSTEM SET recovery_min_apply_delay = '300ms'",
        "SELECT pg_reload_conf()",
    ];
    on_standby(standby, &trail).await?;
    log.push(harness.progress.fault("standby replay held 300 ms behind"));
    tokio::time::sleep_until(at(0.45).into()).await;
    let caught_up = [
        "ALTER SYSTEM RESET recovery_min_apply_delay",
        "SELECT pg_reload_conf()",
    ];
    on_standby(standby, &caught_up).await?;
    log.push(harness.progress.fault("standby replay no longer held"));
    tokio::time::sleep_until(at(0.6).into()).await;
    standby.stop().await.map_err(|error| format!("{error:#}"))?;
    log.push(harness.progress.fault("standby stopped (immediate)"));
    tokio::time::sleep_until(at(0.78).into()).await;
    standby
        .start()
        .await
        .map_err(|error| format!("{error:#}"))?;
    log.push(harness.progress.fault("standby started again"));
    Ok(log)
}

/// When the workload of the live-updates check began.
async fn run_started(harness: &Harness) -> Result<Instant, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(started) = harness.progress.run_started() {
            return Ok(started);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the live-updates workload did not start within 60 s".into())
}

async fn on_standby(standby: &Cluster, statements: &[&str]) -> Result<(), String> {
    let connection = Database::connect(standby.url(DATABASE))
        .await
        .map_err(|error| format!("connecting to the standby: {error}"))?;
    for sql in statements {
        connection
            .execute_unprepared(sql)
            .await
            .map_err(|error| format!("{sql} on the standby: {error}"))?;
    }
    let _ = connection.close().await;
    Ok(())
}

/// Until `deadline`, on each instance in turn: request a visit, read one's own list at once, and
/// withdraw it (so the minutes last, and the list of requested ones stays short). Every read
/// must show the visit just requested.
async fn own_writes_until(
    harness: &Harness,
    writer: &Session,
    deadline: Instant,
) -> Result<String, String> {
    let started = Instant::now();
    let mut checked = 0_usize;
    let mut retried = 0_usize;
    while Instant::now() < deadline {
        let client = harness.client(checked);
        let visit = match client.request_visit(&writer.token, 1, None).await {
            Ok(visit) => visit,
            // An instance mid-fault may refuse, retryably: what must never happen is a stale read.
            Err(failure) if failure.retryable => {
                retried += 1;
                continue;
            }
            Err(failure) => {
                return Err(format!("own-writes check: requesting failed: {failure:?}"));
            }
        };
        match own_visits(client, &writer.token).await {
            Ok(listed) if listed.contains(&visit) => {}
            Ok(_) => {
                return Err(format!(
                    "own-writes check: {} did not list visit {visit} its member had just \
                     requested ({:.1}s in)",
                    client.base_url,
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(failure) if failure.retryable => retried += 1,
            Err(failure) => return Err(format!("own-writes check: listing failed: {failure:?}")),
        }
        let _ = client.cancel_visit(&writer.token, &visit).await;
        checked += 1;
    }
    if checked == 0 {
        return Err("own-writes check: no write could be checked".into());
    }
    Ok(format!(
        "{checked} writes each seen at once by their writer ({retried} retryable refusals)"
    ))
}

async fn own_visits(client: &Client, token: &str) -> Result<Vec<String>, crate::client::Failure> {
    let data = client
        .execute(
            Some(token),
            "{ visits(filter: { role: MEMBER, status: REQUESTED }, first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await?;
    Ok(data["visits"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .filter_map(|edge| edge["node"]["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// Reads both instances have served from the standby so far, from their `/metrics`.
async fn reads_served_by_replica(harness: &Harness) -> f64 {
    const SERIES: &str = "home_visits_database_reads_total{served_by=\"replica\"} ";
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for client in &harness.clients {
        let Ok(response) = http
            .get(format!("{}/metrics", client.base_url))
            .send()
            .await
        else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        total += text
            .lines()
            .find_map(|line| line.strip_prefix(SERIES))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    total
}
