//! `integration bench`: closed-loop load on the hot paths through the instances, side by side with
//! pgbench running the very statements the service issues, on a copy of the same fixture.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;

use crate::{
    client::{Client, Outcome},
    cpu::{Meter, Reading, postmaster_pid},
    instances::SpawnedInstance,
    invariants, recreate_database,
};

pub const WORKLOADS: [&str; 6] = [
    "request",
    "request-hot",
    "complete",
    "complete-hot",
    "read",
    "login",
];

/// Visits pre-booked per second of run for a workload that completes them.
fn visits_per_second(workload: &str) -> u64 {
    if workload == "complete-hot" {
        HOT_VISITS_PER_SECOND
    } else {
        RANDOM_VISITS_PER_SECOND
    }
}

/// Members are numbered 1..=MEMBERS; 1 is the hot requester, 2 the hot member whose visits are completed.
const MEMBERS: i64 = 10_000;
const PASSWORD: &str = "bench password 1";
/// Visits to pre-book per second of run, so neither pgbench nor the service runs out.
const RANDOM_VISITS_PER_SECOND: u64 = 9_000;
const HOT_VISITS_PER_SECOND: u64 = 4_000;

pub struct BenchOptions {
    pub binary: PathBuf,
    pub instance_ports: Vec<u16>,
    pub database_url: String,
    pub clients: usize,
    pub duration: Duration,
    pub rounds: u32,
    pub workloads: Vec<&'static str>,
    pub pool_size: u32,
    /// Tokio worker threads per instance (`TOKIO_WORKER_THREADS`).
    pub worker_threads: usize,
    pub pgbench: bool,
}

fn member_id(n: i64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn session_id(n: i64) -> String {
    format!("10000000-0000-4000-8000-{n:012}")
}

fn random_visit_id(v: u64) -> String {
    format!("20000000-0000-4000-8000-{v:012}")
}

fn hot_visit_id(v: u64) -> String {
    format!("30000000-0000-4000-8000-{v:012}")
}

/// The member of random visit `v`, and the pal who completes it (as in `pgbench/complete.sql`).
fn random_visit_parties(v: u64) -> (i64, i64) {
    let v = i64::try_from(v).unwrap_or(0);
    (3 + v % (MEMBERS - 2), 3 + (v + 1) % (MEMBERS - 2))
}

/// A member other than the two hot ones, the same for a given client and iteration.
fn random_member(client: usize, iteration: u64) -> i64 {
    StdRng::seed_from_u64((client as u64) << 32 | iteration).random_range(3..=MEMBERS)
}

/// Users, sessions, balances and pre-booked visits, written with SQL: registering 10,000 users
/// through the API would spend minutes in Argon2 before measuring anything.
async fn load_fixture(
    db: &DatabaseConnection,
    password_hash: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let random_visits = seconds * RANDOM_VISITS_PER_SECOND;
    let hot_visits = seconds * HOT_VISITS_PER_SECOND;
    let uuid = |prefix: &str, expr: &str| {
        format!("('{prefix}-0000-4000-8000-' || lpad(({expr})::text, 12, '0'))::uuid")
    };
    let member = |expr: &str| uuid("00000000", expr);
    let statements = [
        format!(
            "INSERT INTO users (id, email, password_hash, first_name, last_name) \
             SELECT {}, 'bench-' || n || '@bench.test', $1, 'Bench', 'Member ' || n FROM generate_series(1, {MEMBERS}) n",
            member("n")
        ),
        // Realistic balances: the hot requester can book for the whole run without being refused,
        // the hot member can pay for every pre-booked visit, everyone else has 1,000 minutes.
        format!(
            "INSERT INTO balances (user_id, minutes, starting_minutes) \
             SELECT {}, m, m FROM (SELECT n, CASE n WHEN 1 THEN {} WHEN 2 THEN {} ELSE 1000 END AS m \
             FROM generate_series(1, {MEMBERS}) n) grants",
            member("n"),
            seconds * 5_000,
            hot_visits * 10
        ),
        format!(
            "INSERT INTO sessions (id, user_id, expires_at) \
             SELECT {}, {}, now() + interval '1 day' FROM generate_series(1, {MEMBERS}) n",
            uuid("10000000", "n"),
            member("n")
        ),
        format!(
            "INSERT INTO visits (id, member_id, date, minutes, status) \
             SELECT {}, {}, current_date + 1, 10, 'REQUESTED' FROM generate_series(1, {random_visits}) v",
            uuid("20000000", "v"),
            member(&format!("3 + v % {}", MEMBERS - 2))
        ),
        format!(
            "INSERT INTO visits (id, member_id, date, minutes, status) \
             SELECT {}, {}, current_date + 1, 10, 'REQUESTED' FROM generate_series(1, {hot_visits}) v",
            uuid("30000000", "v"),
            member("2")
        ),
        "INSERT INTO visit_tasks (visit_id, position, name) SELECT id, 0, 'Company' FROM visits"
            .to_string(),
        "ANALYZE".to_string(),
    ];
    for (index, sql) in statements.iter().enumerate() {
        let statement = if index == 0 {
            Statement::from_sql_and_values(db.get_database_backend(), sql, [password_hash.into()])
        } else {
            Statement::from_string(db.get_database_backend(), sql)
        };
        db.execute_raw(statement)
            .await
            .with_context(|| format!("fixture: {sql}"))?;
    }
    Ok(())
}

/// Access tokens the instances accept, minted with their shared secret for the fixture's sessions.
fn mint_tokens(secret: &str) -> anyhow::Result<Vec<String>> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let now = chrono::Utc::now().timestamp();
    (0..=MEMBERS)
        .map(|n| {
            let claims = json!({ "sub": member_id(n), "sid": session_id(n), "iat": now, "exp": now + 3600,
                                 "iss": "home-visits", "aud": "home-visits" });
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).context("minting a token")
        })
        .collect()
}

#[derive(Default)]
pub struct Measurement {
    pub latencies: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "-".into();
    }
    errors
        .iter()
        .map(|(code, count)| format!("{code}:{count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One round's figures, for the service or for pgbench.
#[derive(Clone, Copy)]
struct Summary {
    per_second: f64,
    /// Calls answered, successful or not (transactions, for pgbench).
    count: u64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
}

impl Summary {
    fn of(measured: &Measurement) -> Self {
        Self {
            per_second: measured.per_second(),
            count: measured.latencies.len() as u64 + measured.errors.values().sum::<u64>(),
            p50: measured.percentile(0.50),
            p95: measured.percentile(0.95),
            p99: measured.percentile(0.99),
        }
    }

    /// Each figure's median over the rounds (the upper one of an even count).
    fn median(rounds: &[Summary]) -> Self {
        fn middle<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            values[values.len() / 2]
        }
        Self {
            per_second: middle(rounds.iter().map(|round| round.per_second).collect()),
            count: middle(rounds.iter().map(|round| round.count).collect()),
            p50: middle(rounds.iter().map(|round| round.p50).collect()),
            p95: middle(rounds.iter().map(|round| round.p95).collect()),
            p99: middle(rounds.iter().map(|round| round.p99).collect()),
        }
    }
}

/// One row of the CPU table: what each party spent per call, summed over a workload's rounds.
fn cpu_line(
    workload: &str,
    service: &Reading,
    calls: u64,
    reference: &Reading,
    transactions: u64,
) -> String {
    let per = |spent: Duration, count: u64| spent.as_secs_f64() * 1e6 / count.max(1) as f64;
    let ours = format!(
        "{:<19} {:>9.0} {:>9.0} {:>9.0} {:>7.0}",
        workload,
        per(service.instances, calls),
        per(service.server, calls),
        per(service.this_process, calls),
        per(
            service.instances + service.server + service.this_process,
            calls
        ),
    );
    if transactions == 0 {
        return ours;
    }
    format!(
        "{ours}   {:>17.0} {:>7.0} {:>7.0}",
        per(reference.server, transactions),
        per(reference.finished_children, transactions),
        per(reference.server + reference.finished_children, transactions),
    )
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

/// Deletes the hot requester's bookings (their tasks go with them).
async fn forget_hot_requests(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "DELETE FROM visits WHERE member_id = $1::uuid",
        [member_id(1).into()],
    ))
    .await
    .context("forgetting the hot requester's bookings")?;
    Ok(())
}

/// Closed loop: each client sends its next call as soon as the previous answered. Latencies are
/// of successful calls; failures are counted by code.
async fn drive<F, Fut>(clients: usize, duration: Duration, call: F) -> Measurement
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Outcome<()>>,
{
    let started = Instant::now();
    let deadline = started + duration;
    let per_client = join_all((0..clients).map(|client| {
        let call = &call;
        async move {
            let mut measured = Measurement::default();
            let mut iteration = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match call(client, iteration).await {
                    Ok(()) => measured.latencies.push(sent.elapsed()),
                    Err(failure) => *measured.errors.entry(failure.label()).or_default() += 1,
                }
                iteration += 1;
            }
            measured
        }
    }))
    .await;
    let mut total = Measurement {
        elapsed: started.elapsed(),
        ..Measurement::default()
    };
    for measured in per_client {
        total.latencies.extend(measured.latencies);
        for (code, count) in measured.errors {
            *total.errors.entry(code).or_default() += count;
        }
    }
    total
}

struct Fixture {
    clients: Vec<Client>,
    tokens: Vec<String>,
}

impl Fixture {
    fn client(&self, index: usize) -> &Client {
        &self.clients[index % self.clients.len()]
    }
}

/// `first_iteration` moves a round of a complete workload past the visits earlier rounds completed.
async fn run_workload(
    fixture: &Fixture,
    workload: &str,
    clients: usize,
    duration: Duration,
    first_iteration: u64,
) -> Measurement {
    let token = |n: i64| fixture.tokens[usize::try_from(n).unwrap_or(0)].as_str();
    match workload {
        "request" => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture.client(client).request_visit(token(member), 1, None).await.map(drop)
            })
            .await
        }
        "request-hot" => {
            drive(clients, duration, |client, _| async move {
                fixture.client(client).request_visit(token(1), 1, None).await.map(drop)
            })
            .await
        }
        "complete" | "complete-hot" => {
            let visit_id = if workload == "complete" { random_visit_id } else { hot_visit_id };
            drive(clients, duration, |client, iteration| async move {
                let v = client as u64 + (first_iteration + iteration) * clients as u64 + 1;
                let (_, pal) = random_visit_parties(v);
                fixture.client(client).complete_visit(token(pal), &visit_id(v)).await.map(drop)
            })
            .await
        }
        "read" => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture
                    .client(client)
                    .execute(
                        Some(token(member)),
                        "{ visits(filter: {role: MEMBER}, first: 20) { totalCount edges { node {
                            id date minutes status tasks { name description } member { firstName } } } } }",
                        json!({}),
                    )
                    .await
                    .map(drop)
            })
            .await
        }
        "login" => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture
                    .client(client)
                    .execute(
                        None,
                        "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
                        json!({ "input": { "email": format!("bench-{member}@bench.test"), "password": PASSWORD } }),
                    )
                    .await
                    .map(drop)
            })
            .await
        }
        _ => Measurement::default(),
    }
}

fn find_pgbench() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let binary = entry.path().join("bin/pgbench");
            binary.exists().then_some((version, binary))
        })
        .collect();
    candidates.sort();
    if let Some((_, binary)) = candidates.pop() {
        return Ok(binary);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|binary| binary.exists())
        .context("pgbench not found (Debian: apt-get install postgresql)")
}

fn run_pgbench(
    database_url: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
    run: u32,
    first_iteration: u64,
) -> anyhow::Result<Summary> {
    let log_dir =
        std::env::temp_dir().join(format!("home-visits-pgbench-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let output = Command::new(find_pgbench()?)
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg(format!("--client={clients}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .args([
            "-D",
            &format!("run={run}"),
            "-D",
            &format!("i={first_iteration}"),
            "-D",
            &format!("clients={clients}"),
        ])
        .arg("--log")
        .arg(format!("--log-prefix={}", log_dir.join("tx").display()))
        .arg("-f")
        .arg(script)
        .arg(database_url)
        .output()
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .context("no tps in pgbench's output")?;
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&log_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        latencies.extend(
            text.lines()
                .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
                .map(Duration::from_micros),
        );
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    let measured = Measurement {
        latencies,
        ..Measurement::default()
    };
    Ok(Summary {
        per_second: tps,
        ..Summary::of(&measured)
    })
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

fn millis(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
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
    let env = vec![
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
        (
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE".to_string(),
            "100000000".to_string(),
        ),
    ];
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
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("pgbench");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    println!(
        "home-visits bench: {} instance(s), pool {} and {} worker thread(s) each, {} clients, {} s per workload, {} cores",
        options.instance_ports.len(),
        options.pool_size,
        options.worker_threads,
        options.clients,
        seconds,
        cores
    );
    println!(
        "{:<13} {:>9} {:>8} {:>8} {:>8}  {:>10} {:>8} {:>8}  {:>6} {:>9}  {:<16} errors",
        "workload",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "pgbench/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "p99 ratio",
        "ratio per round"
    );
    let meter = local_postmaster(&db).await.map(|postmaster| {
        Meter::new(
            instances.iter().filter_map(SpawnedInstance::pid).collect(),
            postmaster,
        )
    });
    let mut cpu_lines = Vec::new();
    let mut run = 0_u32;
    for workload in &options.workloads {
        let script = scripts.join(format!("{workload}.sql"));
        let mut service_rounds = Vec::new();
        let mut reference_rounds = Vec::new();
        let mut errors = BTreeMap::new();
        let (mut service_cpu, mut reference_cpu) = (Reading::default(), Reading::default());
        for round in 0..options.rounds {
            run += 1;
            // Each round completes visits no earlier round touched, on both sides.
            let first_visit = u64::from(round) * seconds * visits_per_second(workload);
            let first_iteration = first_visit.div_ceil(options.clients as u64);
            if *workload == "request-hot" {
                // The hot requester starts every round with no bookings, as in the first: thousands of
                // outstanding visits would slow the sum under its lock (an artifact, not the product).
                forget_hot_requests(&db).await?;
            }
            if options.pgbench && script.exists() {
                if *workload == "request-hot" {
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
            let before = meter.as_ref().map(Meter::read);
            let measured = run_workload(
                &fixture,
                workload,
                options.clients,
                options.duration,
                first_iteration,
            )
            .await;
            for (code, count) in &measured.errors {
                *errors.entry(code.clone()).or_insert(0) += count;
            }
            if let (Some(meter), Some(before)) = (&meter, before) {
                service_cpu += meter.read() - before;
            }
            service_rounds.push(Summary::of(&measured));
        }
        cpu_lines.push(cpu_line(
            workload,
            &service_cpu,
            service_rounds.iter().map(|round| round.count).sum(),
            &reference_cpu,
            reference_rounds.iter().map(|round| round.count).sum(),
        ));
        let service = Summary::median(&service_rounds);
        let reference = (!reference_rounds.is_empty()).then(|| Summary::median(&reference_rounds));
        let (reference_columns, ratio, p99_ratio, round_ratios) = match (&reference, *workload) {
            (Some(pg), _) => (
                format!(
                    "{:>10.0} {:>8} {:>8}",
                    pg.per_second,
                    millis(pg.p50),
                    millis(pg.p99)
                ),
                format!("{:.2}", service.per_second / pg.per_second),
                format!(
                    "{:.2}",
                    service.p99.as_secs_f64() / pg.p99.as_secs_f64().max(1e-9)
                ),
                service_rounds
                    .iter()
                    .zip(&reference_rounds)
                    .map(|(ours, theirs)| format!("{:.2}", ours.per_second / theirs.per_second))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (None, "login") => {
                let verify = argon2_verify_time()?;
                let bound = cores as f64 / verify.as_secs_f64();
                (
                    format!("{:>10.0} {:>8} {:>8}", bound, millis(verify), "argon2"),
                    format!("{:.2}", service.per_second / bound),
                    "-".to_string(),
                    service_rounds
                        .iter()
                        .map(|ours| format!("{:.2}", ours.per_second / bound))
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            }
            (None, _) => (
                format!("{:>10} {:>8} {:>8}", "-", "-", "-"),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            ),
        };
        println!(
            "{:<13} {:>9.0} {:>8} {:>8} {:>8}  {reference_columns}  {:>6} {:>9}  {:<16} {}",
            workload,
            service.per_second,
            millis(service.p50),
            millis(service.p95),
            millis(service.p99),
            ratio,
            p99_ratio,
            round_ratios,
            errors_text(&errors)
        );
    }
    let rss: Vec<String> = instances
        .iter()
        .map(|instance| match instance.peak_rss_bytes() {
            Some(bytes) => format!("{} {:.0} MB", instance.url(), bytes as f64 / 1_048_576.0),
            None => format!("{} n/a", instance.url()),
        })
        .collect();
    pgbench_conn.close().await?;
    if meter.is_some() {
        println!(
            "\nCPU per call, µs    {:>9} {:>9} {:>9} {:>7}   {:>17} {:>7} {:>7}",
            "instances", "postgres", "load gen", "total", "pgbench: postgres", "client", "total"
        );
        for line in cpu_lines {
            println!("{line}");
        }
        println!();
    } else {
        println!("CPU per call: n/a (the database server is not a process on this machine)");
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
    Ok(violations.is_clean())
}
