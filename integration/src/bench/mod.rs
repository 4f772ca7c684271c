//! `integration bench`: closed-loop load on the hot paths through the instances, side by side with
//! pgbench running the very statements the service issues, on a copy of the same fixture.
mod charts;
pub mod fixture;
mod live;
mod pgbench;
mod report;
mod scale;
mod sessions;
pub mod stats;
mod watch;
mod workloads;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use self::{
    fixture::{Fixture, PASSWORD, forget_hot_requests, load_fixture, mint_tokens},
    pgbench::run_pgbench,
    report::Reference,
    stats::Summary,
    workloads::run_workload,
};
pub use self::{stats::Measurement, workloads::Workload};
use crate::{
    client::Client,
    cpu::{Meter, Reading, postmaster_pid},
    instances::SpawnedInstance,
    invariants, recreate_database,
};

pub struct BenchOptions {
    pub binary: PathBuf,
    pub instance_ports: Vec<u16>,
    pub database_url: String,
    pub clients: usize,
    pub duration: Duration,
    pub rounds: u32,
    pub workloads: Vec<Workload>,
    pub pool_size: u32,
    /// Tokio worker threads per instance (`TOKIO_WORKER_THREADS`).
    pub worker_threads: usize,
    /// The instances' `CONSUMERS` (`None`: their default, every consumer).
    pub consumers: Option<String>,
    pub pgbench: bool,
    /// Relay the event log to a nats-server of the bench's own during the load.
    pub relay: bool,
    /// Where the pgbench scripts are (those of the binary under test, when comparing builds).
    pub pgbench_dir: PathBuf,
    /// `openVisits` subscribers open during the workloads (their delivery latency is reported).
    pub subscribers: usize,
    /// Idle subscriptions opened on one instance afterwards, to report what they cost in memory.
    pub idle_subscriptions: usize,
    /// Where to write `bench.json` and `bench.html` (checked writable before the run).
    pub report_dir: Option<PathBuf>,
}

/// The pid of the PostgreSQL server behind `db`, if it runs on this machine where we can see it.
async fn local_postmaster(db: &DatabaseConnection) -> Option<u32> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_setting('data_directory') AS directory",
        ))
        .await
        .ok()??;
    let directory: String = row.try_get("", "directory").ok()?;
    postmaster_pid(&directory)
}

/// Time for one Argon2id verification with the service's parameters, on this machine.
fn argon2_verify_time() -> anyhow::Result<Duration> {
    use argon2::{
        Argon2,
        password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
    };
    let hash = Argon2::default()
        .hash_password(b"reference")
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .to_string();
    let parsed = PasswordHash::new(&hash).map_err(|error| anyhow::anyhow!("{error}"))?;
    let started = Instant::now();
    for _ in 0..5 {
        let _ = Argon2::default().verify_password(b"reference", &parsed);
    }
    Ok(started.elapsed() / 5)
}

/// Runs the benchmark and prints its report; fails only if the invariants break.
pub async fn run_bench(options: BenchOptions) -> anyhow::Result<bool> {
    let mut url = reqwest::Url::parse(&options.database_url)?;
    let pgbench_db = format!("{}_pgbench", url.path().trim_start_matches('/'));
    url.set_path(&format!("/{pgbench_db}"));
    let pgbench_url = url.to_string();
    recreate_database(&options.database_url).await?;
    recreate_database(&pgbench_url).await?;

    let secret = format!("bench-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Login is throttled per client address; the bench is one address sending thousands.
    let nats = if options.relay {
        Some(crate::nats::NatsServer::start().await?)
    } else {
        None
    };
    let mut env = vec![
        (
            "DATABASE_POOL_SIZE".to_string(),
            options.pool_size.to_string(),
        ),
        // Read by tokio's runtime builder in the instance's `#[tokio::main]`.
        (
            "TOKIO_WORKER_THREADS".to_string(),
            options.worker_threads.to_string(),
        ),
        (
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE".to_string(),
            "100000000".to_string(),
        ),
        // The fixture's tokens live an hour (`fixture::mint_tokens`); the instances refuse tokens
        // meant to live longer than they issue them.
        (
            "ACCESS_TOKEN_TTL_SECONDS".to_string(),
            fixture::TOKEN_SECONDS.to_string(),
        ),
        (
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE".to_string(),
            "100000000".to_string(),
        ),
    ];
    if let Some(nats) = &nats {
        env.push(("NATS_URL".to_string(), nats.url()));
    }
    if let Some(consumers) = &options.consumers {
        env.push(("CONSUMERS".to_string(), consumers.clone()));
    }
    let mut instances = Vec::new();
    for port in &options.instance_ports {
        instances.push(
            SpawnedInstance::start_with(
                options.binary.clone(),
                *port,
                &options.database_url,
                &secret,
                env.clone(),
            )
            .await?,
        );
    }
    let clients = instances
        .iter()
        .map(|instance| Client::new(&instance.url()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The same migrations on pgbench's copy: the service's own binary applies them.
    let migrated = Command::new(&options.binary)
        .arg("migrate")
        .env("DATABASE_URL", &pgbench_url)
        .env("RUST_LOG", "warn")
        .status()?;
    anyhow::ensure!(migrated.success(), "migrating {pgbench_db} failed");

    // One real registration gives a genuine Argon2id hash of PASSWORD for every fixture member.
    let probe_email = format!("probe-{}@bench.test", uuid::Uuid::new_v4().simple());
    clients[0]
        .register(&probe_email, PASSWORD)
        .await
        .map_err(|failure| anyhow::anyhow!("probe registration failed: {failure:?}"))?;
    let db = Database::connect(&options.database_url).await?;
    let hash_row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT password_hash FROM users WHERE email = $1",
            [probe_email.into()],
        ))
        .await?
        .context("probe user missing")?;
    let password_hash: String = hash_row.try_get("", "password_hash")?;
    let seconds = options.duration.as_secs().max(1);
    let seconds_in_all = seconds * u64::from(options.rounds);
    load_fixture(&db, &password_hash, seconds_in_all).await?;
    let pgbench_conn = Database::connect(&pgbench_url).await?;
    load_fixture(&pgbench_conn, &password_hash, seconds_in_all).await?;
    let fixture = Fixture {
        clients,
        tokens: mint_tokens(&secret)?,
    };
    let scripts = options.pgbench_dir.clone();
    // Decided from what the instances were told, not from /readyz: a probe that times out under
    // the load must not read as a consumer that does not run.
    let runs_consumer = options
        .consumers
        .as_deref()
        .is_none_or(|list| list.split(',').any(|name| name.trim() == "notifications"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    println!(
        "home-visits bench: {} instance(s), pool {} and {} worker thread(s) each, consumers: {}, {} clients, {} s per workload, {} cores",
        options.instance_ports.len(),
        options.pool_size,
        options.worker_threads,
        options.consumers.as_deref().unwrap_or("every one"),
        options.clients,
        seconds,
        cores
    );
    report::print_header();
    let meter = local_postmaster(&db).await.map(|postmaster| {
        Meter::new(
            instances.iter().filter_map(SpawnedInstance::pid).collect(),
            postmaster,
        )
    });
    let subscribers = if options.subscribers > 0 {
        Some(live::Subscribers::start(
            fixture
                .clients
                .iter()
                .map(|client| client.base_url.clone())
                .collect(),
            // Ordinary members (token n is member n; 0 is nobody, 1 and 2 are the hot ones).
            fixture.tokens[3..].to_vec(),
            options.subscribers,
        )?)
    } else {
        None
    };
    let mut record = charts::BenchRecord {
        started_at: chrono::Utc::now(),
        instances: options.instance_ports.len(),
        clients: options.clients,
        seconds_per_round: seconds,
        rounds: options.rounds,
        cores,
        workloads: Vec::new(),
    };
    let mut live_lines = Vec::new();
    let mut cpu_lines = Vec::new();
    let mut session_lines = Vec::new();
    let mut event_lines = Vec::new();
    let mut run = 0_u32;
    let mut scale_lines = Vec::new();
    // It replaces the visits the others use, so it goes last whatever order it was asked in.
    let mut workloads = options.workloads.clone();
    workloads.sort_by_key(|workload| *workload == Workload::ReadAtScale);
    for &workload in &workloads {
        if workload == Workload::ReadAtScale {
            scale_lines = scale::run(&db, &fixture, &password_hash).await?;
            continue;
        }
        let script = workload.pgbench_script().map(|name| scripts.join(name));
        let mut service_rounds = Vec::new();
        let mut reference_rounds = Vec::new();
        let mut errors = BTreeMap::new();
        let (mut service_cpu, mut reference_cpu) = (Reading::default(), Reading::default());
        let mut by_session = sessions::BySession::default();
        let mut delivered = Measurement::default();
        for round in 0..options.rounds {
            run += 1;
            // Each round completes visits no earlier round touched, on both sides.
            let first_visit = u64::from(round) * seconds * workload.visits_per_second();
            let first_iteration = first_visit.div_ceil(options.clients as u64);
            if workload == Workload::RequestHot {
                // The hot requester starts every round with no bookings, as in the first: thousands of
                // outstanding visits would slow the sum under its lock (an artifact, not the product).
                forget_hot_requests(&db).await?;
            }
            if let Some(script) = script.as_ref().filter(|_| options.pgbench) {
                if workload == Workload::RequestHot {
                    forget_hot_requests(&pgbench_conn).await?;
                }
                let script = script.clone();
                let (url, clients, duration) =
                    (pgbench_url.clone(), options.clients, options.duration);
                let before = meter.as_ref().map(Meter::read);
                reference_rounds.push(
                    tokio::task::spawn_blocking(move || {
                        run_pgbench(&url, &script, clients, duration, run, first_iteration)
                    })
                    .await??,
                );
                if let (Some(meter), Some(before)) = (&meter, before) {
                    reference_cpu += meter.read() - before;
                }
            }
            let sessions_before = sessions::snapshot(&db).await;
            let before = meter.as_ref().map(Meter::read);
            let load = run_workload(
                &fixture,
                workload,
                options.clients,
                options.duration,
                first_iteration,
            );
            if let Some(subscribers) = &subscribers {
                subscribers.take();
            }
            let (measured, figures) =
                watch::watch(&fixture.clients, nats.is_some(), runs_consumer, load).await;
            if let Some(subscribers) = &subscribers {
                // What the round's changes delivered, including the tail that arrives just after.
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivered.merge(&subscribers.take());
            }
            event_lines.extend(watch::lines(workload.name(), &figures));
            for (code, count) in &measured.errors {
                *errors.entry(code.clone()).or_insert(0) += count;
            }
            if let (Some(meter), Some(before)) = (&meter, before) {
                service_cpu += meter.read() - before;
                by_session += sessions::snapshot(&db).await.since(&sessions_before);
            }
            service_rounds.push(Summary::of(&measured));
        }
        let calls = service_rounds.iter().map(|round| round.count).sum();
        let transactions = reference_rounds.iter().map(|round| round.count).sum();
        cpu_lines.push(report::cpu_line(
            workload,
            &service_cpu,
            calls,
            &reference_cpu,
            transactions,
        ));
        session_lines.push(by_session.line(workload.name(), service_cpu.server, calls));
        record.workloads.push(charts::WorkloadRecord {
            name: workload.name(),
            service: service_rounds.iter().map(charts::Round::from).collect(),
            pgbench: reference_rounds.iter().map(charts::Round::from).collect(),
            cpu: meter
                .as_ref()
                .map(|_| charts::CpuPerCall::of(&service_cpu, calls)),
            pgbench_cpu: meter
                .as_ref()
                .filter(|_| transactions > 0)
                .map(|_| charts::CpuPerCall::of_pgbench(&reference_cpu, transactions)),
            errors: errors.clone(),
        });
        let reference = if !reference_rounds.is_empty() {
            Reference::Pgbench(&reference_rounds)
        } else if workload == Workload::Login {
            let verify = argon2_verify_time()?;
            Reference::Bound {
                per_second: cores as f64 / verify.as_secs_f64(),
                detail: format!("{} ms argon2", report::millis(verify)),
            }
        } else {
            Reference::None
        };
        report::print_row(workload, &service_rounds, reference, &errors);
        if subscribers.is_some() {
            live_lines.push(format!(
                "  {:<14} {:>8} deliveries  p50 {:>6.1} ms  p99 {:>6.1} ms",
                workload.name(),
                delivered.successes(),
                delivered.percentile(0.5).as_secs_f64() * 1e3,
                delivered.percentile(0.99).as_secs_f64() * 1e3,
            ));
        }
    }
    if let Some(subscribers) = subscribers {
        subscribers.stop();
    }
    let idle = if options.idle_subscriptions > 0 {
        Some(
            live::idle_cost(
                &instances[0],
                &fixture.tokens[3..],
                options.idle_subscriptions,
            )
            .await?,
        )
    } else {
        None
    };
    let rss: Vec<String> = instances
        .iter()
        .map(|instance| match instance.peak_rss_bytes() {
            Some(bytes) => format!("{} {:.0} MB", instance.url(), bytes as f64 / 1_048_576.0),
            None => format!("{} n/a", instance.url()),
        })
        .collect();
    pgbench_conn.close().await?;
    if meter.is_some() {
        report::print_cpu_table(&cpu_lines);
        println!("PostgreSQL's CPU per call by session, µs (the service's side):");
        for line in &session_lines {
            println!("{line}");
        }
        println!();
    } else {
        println!("CPU per call: n/a (the database server is not a process on this machine)");
    }
    for line in &event_lines {
        println!("{line}");
    }
    if !live_lines.is_empty() {
        println!(
            "live delivery, commit -> subscriber ({} openVisits subscribers over the instances, {}):",
            options.subscribers,
            if nats.is_some() {
                "fed by JetStream"
            } else {
                "fed by LISTEN/NOTIFY + the log"
            }
        );
        for line in &live_lines {
            println!("{line}");
        }
    }
    if let Some((before, after)) = idle {
        let per_thousand = after.saturating_sub(before) as f64 / 1_048_576.0 * 1000.0
            / options.idle_subscriptions as f64;
        println!(
            "idle subscriptions: {} on {} took RSS {:.1} -> {:.1} MB: {per_thousand:.1} MB per 1,000",
            options.idle_subscriptions,
            instances[0].url(),
            before as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0,
        );
    }
    for line in &scale_lines {
        println!("{line}");
    }
    println!("peak RSS: {}", rss.join(", "));
    println!(
        "login reference: {cores} cores / one Argon2id verification (the pgbench/s column of login)"
    );
    let violations = invariants::check(&db).await?;
    println!(
        "invariants: {}",
        if violations.is_clean() {
            "PASS".to_string()
        } else {
            format!("FAIL ({violations})")
        }
    );
    for instance in &mut instances {
        instance.kill().await?;
    }
    if let Some(dir) = &options.report_dir {
        charts::write(dir, &record)?;
    }
    Ok(violations.is_clean())
}
