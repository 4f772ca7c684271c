//! The bench's phases: the stand it measures on (databases, instances, fixture, meters), the
//! rounds of one workload on it, and the report of what was measured.
use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use super::{
    BenchOptions,
    beside::{Beside, SideTime},
    charts,
    findings::{Findings, Measured},
    fixture::{self, Fixture, PASSWORD, forget_hot_requests, load_fixture, mint_tokens},
    live, local_postmaster,
    pgbench::run_pgbench,
    report, sessions,
    stats::{Measurement, Summary},
    watch,
    workloads::{Workload, run_workload},
};
use crate::{
    client::Client,
    cpu::{Meter, Reading},
    instances::SpawnedInstance,
    invariants,
    nats::NatsServer,
    recreate_database,
};

/// What the bench runs on: the instances on their database, pgbench's copy of it, the fixture both
/// are loaded with, and the meter of everyone's CPU.
mod probe;

pub struct Stand {
    instances: Vec<SpawnedInstance>,
    nats: Option<NatsServer>,
    /// The pooler and the standby, when asked for.
    beside: Beside,
    pub db: DatabaseConnection,
    pgbench_conn: DatabaseConnection,
    pgbench_url: String,
    pub fixture: Fixture,
    pub password_hash: String,
    meter: Option<Meter>,
    /// Whether the instances run the notifications consumer (its lag is then watched).
    runs_consumer: bool,
    pub cores: usize,
    seconds: u64,
}

impl Stand {
    pub async fn set_up(options: &BenchOptions) -> anyhow::Result<Self> {
        let mut url = reqwest::Url::parse(&options.database_url)?;
        let pgbench_db = format!("{}_pgbench", url.path().trim_start_matches('/'));
        url.set_path(&format!("/{pgbench_db}"));
        let pgbench_url = url.to_string();
        recreate_database(&options.database_url).await?;
        recreate_database(&pgbench_url).await?;

        let secret = format!("bench-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let nats = if options.relay {
            Some(NatsServer::start().await?)
        } else {
            None
        };
        let mut env = instance_env(options);
        if let Some(nats) = &nats {
            env.push(("NATS_URL".to_string(), nats.url()));
        }
        let beside = Beside::set_up(options, &mut env).await?;
        let instance_database_url = beside.instance_database_url(&options.database_url);
        let mut instances = Vec::new();
        for port in &options.instance_ports {
            instances.push(
                SpawnedInstance::start_with(
                    options.binary.clone(),
                    *port,
                    &instance_database_url,
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
        probe::readers_caught_up(&db).await?;
        let meter = local_postmaster(&db).await.map(|postmaster| {
            Meter::new(
                instances.iter().filter_map(SpawnedInstance::pid).collect(),
                postmaster,
            )
        });
        Ok(Self {
            instances,
            nats,
            beside,
            db,
            pgbench_conn,
            pgbench_url,
            fixture: Fixture {
                clients,
                tokens: mint_tokens(&secret)?,
            },
            password_hash,
            meter,
            // Decided from what the instances were told, not from /readyz: a probe that times out
            // under the load must not read as a consumer that does not run.
            runs_consumer: options
                .consumers
                .as_deref()
                .is_none_or(|list| list.split(',').any(|name| name.trim() == "notifications")),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            seconds,
        })
    }

    /// Whether CPU is measured (PostgreSQL runs on this machine, where its processes are seen).
    pub fn metered(&self) -> bool {
        self.meter.is_some()
    }

    pub fn print_header(&self, options: &BenchOptions) {
        println!(
            "home-visits bench: {} instance(s), pool {} and {} worker thread(s) each, consumers: {}, {} clients, {} s per workload, {} cores",
            options.instance_ports.len(),
            options.pool_size,
            options.worker_threads,
            options.consumers.as_deref().unwrap_or("every one"),
            options.clients,
            self.seconds,
            self.cores
        );
        self.beside.print_header();
        report::print_header();
    }

    /// The `openVisits` subscribers that listen through every workload, if any were asked for.
    pub fn subscribers(&self, options: &BenchOptions) -> anyhow::Result<Option<live::Subscribers>> {
        if options.subscribers == 0 {
            return Ok(None);
        }
        Ok(Some(live::Subscribers::start(
            self.fixture
                .clients
                .iter()
                .map(|client| client.base_url.clone())
                .collect(),
            // Ordinary members (token n is member n; 0 is nobody, 1 and 2 are the hot ones).
            self.fixture.tokens[3..].to_vec(),
            options.subscribers,
        )?))
    }

    /// One workload's rounds: in each, pgbench on its copy, then the service, each metered.
    pub async fn measure(
        &self,
        options: &BenchOptions,
        workload: Workload,
        subscribers: Option<&live::Subscribers>,
        run: &mut u32,
    ) -> anyhow::Result<Measured> {
        let script = workload
            .pgbench_script()
            .map(|name| options.pgbench_dir.join(name));
        let mut measured = Measured {
            service_rounds: Vec::new(),
            reference_rounds: Vec::new(),
            errors: BTreeMap::new(),
            service_cpu: Reading::default(),
            reference_cpu: Reading::default(),
            by_session: sessions::BySession::default(),
            side_cpu: SideTime::default(),
            delivered: Measurement::default(),
            event_lines: Vec::new(),
        };
        for round in 0..options.rounds {
            *run += 1;
            // Each round completes visits no earlier round touched, on both sides.
            let first_visit = u64::from(round) * self.seconds * workload.visits_per_second();
            let first_iteration = first_visit.div_ceil(options.clients as u64);
            if workload == Workload::RequestHot {
                // The hot requester starts every round with no bookings, as in the first: thousands
                // of outstanding visits would slow the sum under its lock (an artifact, not the
                // product).
                forget_hot_requests(&self.db).await?;
            }
            if let Some(script) = script.as_ref().filter(|_| options.pgbench) {
                if workload == Workload::RequestHot {
                    forget_hot_requests(&self.pgbench_conn).await?;
                }
                let script = script.clone();
                let (url, clients, duration, run) = (
                    self.pgbench_url.clone(),
                    options.clients,
                    options.duration,
                    *run,
                );
                let before = self.meter.as_ref().map(Meter::read);
                measured.reference_rounds.push(
                    tokio::task::spawn_blocking(move || {
                        run_pgbench(&url, &script, clients, duration, run, first_iteration)
                    })
                    .await??,
                );
                if let (Some(meter), Some(before)) = (&self.meter, before) {
                    measured.reference_cpu += meter.read() - before;
                }
            }
            let sessions_before = sessions::snapshot(&self.db).await;
            let side_before = self.beside.time();
            let before = self.meter.as_ref().map(Meter::read);
            let load = run_workload(
                &self.fixture,
                workload,
                options.clients,
                options.duration,
                first_iteration,
            );
            if let Some(subscribers) = subscribers {
                subscribers.take();
            }
            let (round_measured, figures) = watch::watch(
                &self.fixture.clients,
                self.nats.is_some(),
                self.runs_consumer,
                load,
            )
            .await;
            if let Some(subscribers) = subscribers {
                // What the round's changes delivered, including the tail that arrives just after.
                tokio::time::sleep(Duration::from_millis(500)).await;
                measured.delivered.merge(&subscribers.take());
            }
            measured
                .event_lines
                .extend(watch::lines(workload.name(), &figures));
            for (code, count) in &round_measured.errors {
                *measured.errors.entry(code.clone()).or_insert(0) += count;
            }
            if let (Some(meter), Some(before)) = (&self.meter, before) {
                measured.service_cpu += meter.read() - before;
                measured.side_cpu += self.beside.time() - side_before;
                measured.by_session += sessions::snapshot(&self.db).await.since(&sessions_before);
            }
            measured.service_rounds.push(Summary::of(&round_measured));
        }
        Ok(measured)
    }

    /// Prints what was measured, with the idle sockets' memory, each instance's peak RSS and the
    /// books' invariants; stops the instances; writes the charts. `true` when the books hold.
    pub async fn report(
        mut self,
        options: &BenchOptions,
        findings: Findings,
    ) -> anyhow::Result<bool> {
        let idle = if options.idle_subscriptions > 0 {
            Some(
                live::idle_cost(
                    &self.instances,
                    &self.db,
                    &self.fixture.tokens[3..],
                    options.idle_subscriptions,
                )
                .await?,
            )
        } else {
            None
        };
        let rss: Vec<String> = self
            .instances
            .iter()
            .map(|instance| match instance.peak_rss_bytes() {
                Some(bytes) => format!("{} {:.0} MB", instance.url(), bytes as f64 / 1_048_576.0),
                None => format!("{} n/a", instance.url()),
            })
            .collect();
        self.pgbench_conn.close().await?;
        if self.meter.is_some() {
            report::print_cpu_table(&findings.cpu_lines);
            println!("PostgreSQL's CPU per call by session, µs (the service's side):");
            for line in &findings.session_lines {
                println!("{line}");
            }
            println!();
            if self.beside.any() {
                println!("beside the primary, CPU per call, µs (the service's side):");
                for line in &findings.side_lines {
                    println!("{line}");
                }
                println!();
            }
        } else {
            println!("CPU per call: n/a (the database server is not a process on this machine)");
        }
        for line in &findings.event_lines {
            println!("{line}");
        }
        if !findings.live_lines.is_empty() {
            println!(
                "live delivery, commit -> subscriber ({} openVisits subscribers over the instances, {}):",
                options.subscribers,
                if self.nats.is_some() {
                    "fed by JetStream"
                } else {
                    "fed by LISTEN/NOTIFY + the log"
                }
            );
            for line in &findings.live_lines {
                println!("{line}");
            }
            println!("live deliveries per second during the workloads:");
            for line in &findings.delivery_rate_lines {
                println!("{line}");
            }
        }
        if let Some(line) = &findings.probe_line {
            println!("{line}");
        }
        if let Some(idle) = idle {
            println!("{}", idle.line());
        }
        for line in &findings.scale_lines {
            println!("{line}");
        }
        println!("peak RSS: {}", rss.join(", "));
        println!(
            "login reference: {} cores / one Argon2id verification (the pgbench/s column of login)",
            self.cores
        );
        let violations = invariants::check(&self.db).await?;
        println!(
            "invariants: {}",
            if violations.is_clean() {
                "PASS".to_string()
            } else {
                format!("FAIL ({violations})")
            }
        );
        for instance in &mut self.instances {
            instance.kill().await?;
        }
        if let Some(dir) = &options.report_dir {
            charts::write(dir, &findings.record)?;
        }
        Ok(violations.is_clean())
    }
}

/// What every instance of the bench is started with.
fn instance_env(options: &BenchOptions) -> Vec<(String, String)> {
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
        // Login is throttled per client address; the bench is one address sending thousands.
        (
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE".to_string(),
            "100000000".to_string(),
        ),
        (
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE".to_string(),
            "100000000".to_string(),
        ),
        // The fixture's tokens live an hour (`fixture::mint_tokens`); the instances refuse tokens
        // meant to live longer than they issue them.
        (
            "ACCESS_TOKEN_TTL_SECONDS".to_string(),
            fixture::TOKEN_SECONDS.to_string(),
        ),
    ];
    if let Some(consumers) = &options.consumers {
        env.push(("CONSUMERS".to_string(), consumers.clone()));
    }
    // Room for each instance's share of the idle subscriptions, beside the live subscribers.
    let sockets = (options.idle_subscriptions + options.subscribers)
        .div_ceil(options.instance_ports.len().max(1))
        + 1_000;
    env.push((
        "WS_MAX_CONNECTIONS".to_string(),
        sockets.max(10_000).to_string(),
    ));
    env
}
