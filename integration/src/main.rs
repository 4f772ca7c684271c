use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use integration::{
    bench::{BenchOptions, Workload, run_bench},
    client::Client,
    harness::Harness,
    instances::SpawnedInstance,
    nats::NatsServer,
    recreate_database, replay, report,
    scenarios::{Scenario, bank::BankOptions},
    setup,
    suite::{run_suite, runnable, select_scenarios},
};
use sea_orm::Database;

/// Hammers home-visits instances with racing GraphQL calls and checks the books in PostgreSQL.
#[derive(Parser)]
#[command(name = "integration", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    suite: SuiteArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the hot paths through spawned instances, side by side with pgbench.
    Bench(BenchArgs),
    /// Replace a migrated database's visits with many of a realistic shape (see `seed.rs`).
    Seed(SeedArgs),
}

#[derive(Args)]
struct SeedArgs {
    /// A database the service has migrated (run the service, or `home-visits migrate`, on it first).
    #[arg(long)]
    database_url: String,
    /// Visits to write (every visit there is replaced).
    #[arg(long, default_value_t = 1_000_000)]
    visits: i64,
    /// Members to spread them over (created if missing; password `bench password 1`).
    #[arg(long, default_value_t = 10_000)]
    users: i64,
}

#[derive(Args)]
struct SuiteArgs {
    /// An instance's base URL (repeat for each; calls alternate between them). With --spawn, the
    /// harness starts an instance on each URL's port. Without --instance, --database-url and
    /// --spawn, the harness builds the service, starts the local database and two instances.
    #[arg(long = "instance")]
    instances: Vec<String>,
    /// The database the instances use; read only for the invariant checks.
    #[arg(long)]
    database_url: Option<String>,
    /// `all` or one of the scenario names.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Length of the randomized minute-bank run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the randomized run (printed, so a failure can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Start the instances from this home-visits binary (needed to kill -9 one during the run).
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// With --spawn: drop and re-create the database of --database-url first.
    #[arg(long, requires = "spawn")]
    fresh_database: bool,
    /// With --spawn: start no broker, so the instances run from PostgreSQL alone (the default
    /// deployment); scenarios that need the broker then fail.
    #[arg(long, requires = "spawn")]
    without_broker: bool,
    /// Run without injected faults.
    #[arg(long)]
    no_faults: bool,
    /// Succeed only if the suite finds a violation: proves it catches a build without row locks.
    #[arg(long)]
    expect_violations: bool,
    /// Write junit.xml, report.json and report.html into this directory (created if missing).
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// The home-visits binary to start (release build for meaningful figures). Default: the
    /// harness builds it, in its own profile.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Base URL of each instance to start (its port is used). Default: two, on 14001 and 14002.
    #[arg(long = "instance")]
    instances: Vec<String>,
    /// A database for the run; it is dropped and re-created, and so is `<name>_pgbench` beside it.
    /// Default: `home_visits_bench` on the local cluster (started as the service starts it).
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per workload (and per pgbench run).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workloads to run, comma-separated (default: all of them, in this order).
    #[arg(long, value_enum, value_delimiter = ',')]
    workload: Vec<Workload>,
    /// Database connections per instance (measured best on 2 cores: 4 each for 2 instances).
    #[arg(long, default_value_t = 4)]
    pool_size: u32,
    /// Tokio worker threads per instance (default: cores / instances, at least 1).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// The event consumers the instances run (their `CONSUMERS`; default: every one). `none`
    /// measures requests and the event log alone, as instances that leave the consumers to
    /// worker instances elsewhere would run.
    #[arg(long)]
    consumers: Option<String>,
    /// Rounds per workload, each a pgbench run then a service run; the report gives medians (one
    /// round of a few seconds on a shared 2-core machine varies by 10-20%).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Skip the pgbench side.
    #[arg(long)]
    no_pgbench: bool,
    /// Relay the event log to a nats-server (started by the bench) while the load runs, and
    /// report the relay's throughput and lag.
    #[arg(long)]
    relay: bool,
    /// Put a PgBouncer of the bench's own (transaction mode, as many server connections as the
    /// instances' pools hold) between the instances and PostgreSQL; pgbench stays direct.
    #[arg(long)]
    through_pgbouncer: bool,
    /// Make a streaming standby of the database server (`pg_basebackup -R`) and give the
    /// instances `DATABASE_READ_URL`; its CPU per call is reported beside the primary's.
    #[arg(long)]
    read_replica: bool,
    /// The pgbench scripts to run (default: this checkout's `integration/pgbench`); point it at
    /// another checkout's to compare that checkout's build like for like.
    #[arg(long)]
    pgbench_dir: Option<PathBuf>,
    /// `openVisits` subscribers during the workloads (0: none).
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// Idle subscriptions opened at the end, one per socket, spread over the instances, to measure
    /// their memory (over several local addresses past 20,000 per instance).
    #[arg(long, default_value_t = 1000)]
    idle_subscriptions: usize,
    /// Write bench.json and bench.html (charts) into this directory (created if missing).
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench's load generator shares the cores with what it measures, so it runs on one thread:
    // measured +5-7% req/s for the instances against a two-worker client.
    let runtime = match cli.command {
        Some(Command::Bench(_) | Command::Seed(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(async {
            match cli.command {
                Some(Command::Bench(args)) => bench(args).await,
                Some(Command::Seed(args)) => seed(args).await,
                None => run(cli.suite).await,
            }
        }),
        Err(error) => Err(error.into()),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("integration: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `home-visits version` of the binary the harness spawns, for the report.
async fn service_version(binary: &std::path::Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(binary)
        .arg("version")
        .output()
        .await
        .with_context(|| format!("--spawn {}", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "--spawn {}: `version` failed; is it a home-visits binary?",
        binary.display()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

async fn seed(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let db = Database::connect(&args.database_url)
        .await
        .context("--database-url: cannot connect")?;
    let seeded = integration::seed::seed(
        &db,
        integration::seed::Shape {
            users: args.users,
            visits: args.visits,
        },
        &integration::seed::password_hash()?,
    )
    .await?;
    println!(
        "seeded {} visits over {} members ({} open) in {:.1} s",
        args.visits,
        args.users,
        seeded.open,
        seeded.took.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn bench(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.report_dir {
        report::check_writable(dir)?;
    }
    if args.instances.is_empty() {
        args.instances = setup::DEFAULT_INSTANCES.map(String::from).to_vec();
    }
    let binary = match args.spawn.take() {
        Some(binary) => binary,
        None => setup::build_service().await?,
    };
    let database_url = match args.database_url.take() {
        Some(url) => url,
        None => setup::local_database(&binary, "home_visits_bench").await?,
    };
    let workloads = if args.workload.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workload
    };
    let instance_ports = args
        .instances
        .iter()
        .map(|url| {
            reqwest::Url::parse(url)
                .with_context(|| format!("--instance {url}"))?
                .port_or_known_default()
                .with_context(|| format!("--instance {url}: needs a port"))
        })
        .collect::<anyhow::Result<_>>()?;
    let clean = run_bench(BenchOptions {
        binary,
        instance_ports,
        database_url,
        clients: args.clients,
        duration: Duration::from_secs(args.seconds),
        rounds: args.rounds.max(1),
        workloads,
        pool_size: args.pool_size,
        worker_threads: args.worker_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            (cores / args.instances.len().max(1)).max(1)
        }),
        consumers: args.consumers,
        pgbench: !args.no_pgbench,
        relay: args.relay,
        through_pgbouncer: args.through_pgbouncer,
        read_replica: args.read_replica,
        pgbench_dir: args
            .pgbench_dir
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pgbench")),
        subscribers: args.subscribers,
        idle_subscriptions: args.idle_subscriptions,
        report_dir: args.report_dir,
    })
    .await?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(mut cli: SuiteArgs) -> anyhow::Result<ExitCode> {
    let started_at = chrono::Utc::now();
    let run_started = std::time::Instant::now();
    // Every flag is checked before anything is built or any load is sent.
    let selected = select_scenarios(&cli.scenario).context("--scenario")?;
    if let Some(dir) = &cli.report_dir {
        report::check_writable(dir)?;
    }
    let self_contained =
        cli.instances.is_empty() && cli.database_url.is_none() && cli.spawn.is_none();
    if self_contained {
        println!(
            "no --instance given: building home-visits, starting the local database and two instances"
        );
        let binary = setup::build_service().await?;
        cli.database_url = Some(setup::local_database(&binary, "home_visits_integration").await?);
        cli.instances = setup::DEFAULT_INSTANCES.map(String::from).to_vec();
        cli.spawn = Some(binary);
        cli.fresh_database = true;
    }
    anyhow::ensure!(
        !cli.instances.is_empty(),
        "--instance: give at least one instance URL (or none of --instance, --database-url, --spawn)"
    );
    let database_url = cli
        .database_url
        .clone()
        .context("--database-url is required with --instance")?;
    for url in &cli.instances {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--instance {url}"))?;
        anyhow::ensure!(
            parsed.port_or_known_default().is_some(),
            "--instance {url}: needs a port"
        );
    }
    if cli.spawn.is_none() {
        for url in &cli.instances {
            let answers = Client::new(url)
                .with_context(|| format!("--instance {url}"))?
                .answers()
                .await;
            anyhow::ensure!(
                answers,
                "--instance {url}: nothing answers there (start the service, or pass --spawn)"
            );
        }
    }
    let (selected, left_out) = runnable(selected, cli.scenario == "all", cli.spawn.is_some());
    if selected.contains(&Scenario::PostgresRestart) {
        let binary = cli.spawn.as_deref().context(
            "--scenario postgres-restart: needs --spawn (it restarts the cluster with that binary)",
        )?;
        integration::scenarios::postgres_restart::check_cluster(binary, &database_url)
            .await
            .map_err(|reason| anyhow::anyhow!("--scenario postgres-restart: {reason}"))?;
    }
    let seed = cli.seed.unwrap_or_else(rand::random);
    let replay = replay::command(std::env::args(), seed);
    let service_version = match &cli.spawn {
        Some(binary) => Some(service_version(binary).await?),
        None => None,
    };
    if cli.fresh_database {
        recreate_database(&database_url).await?;
    }
    let mut spawned = Vec::new();
    // With --spawn the harness runs the broker too, so the event-stream scenario can restart it.
    let mut nats = match &cli.spawn {
        Some(_) if !cli.without_broker => Some(NatsServer::start().await?),
        _ => None,
    };
    if let Some(binary) = &cli.spawn {
        let jwt_secret = format!("harness-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let env: Vec<(String, String)> = nats
            .iter()
            .map(|nats| ("NATS_URL".to_string(), nats.url()))
            .collect();
        for url in &cli.instances {
            let port = reqwest::Url::parse(url)?
                .port_or_known_default()
                .context("an --instance URL needs a port")?;
            spawned.push(
                SpawnedInstance::start_with(
                    binary.clone(),
                    port,
                    &database_url,
                    &jwt_secret,
                    env.clone(),
                )
                .await?,
            );
        }
    }
    let clients = cli
        .instances
        .iter()
        .map(|url| Client::new(url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let db = Database::connect(&database_url)
        .await
        .context("cannot reach --database-url")?;
    let harness = Harness::new(clients, db, &database_url);
    let bank = BankOptions {
        duration: Duration::from_secs(cli.seconds),
        seed,
        users: 12,
        workers: 16,
        faults: !cli.no_faults,
    };
    println!(
        "home-visits harness: {} instance(s), seed {seed}, {} s randomized run, faults {}",
        cli.instances.len(),
        cli.seconds,
        if bank.faults { "on" } else { "off" }
    );
    let instances = if spawned.is_empty() {
        None
    } else {
        Some(&mut spawned)
    };
    let report = run_suite(&harness, instances, nats.as_mut(), &selected, &bank).await?;
    println!("{}", report.table());
    for (scenario, why) in &left_out {
        println!("left out: {scenario} ({why})");
    }
    for instance in &mut spawned {
        instance.kill().await?;
    }
    if let Some(dir) = &cli.report_dir {
        let run = report::RunInfo {
            seed,
            replay: replay.clone(),
            service_version,
            instances: cli.instances.clone(),
            started_at,
            took: run_started.elapsed(),
            left_out: left_out
                .iter()
                .map(|(scenario, why)| (scenario.name(), *why))
                .collect(),
        };
        let written = report::write(dir, &report, &run)?;
        let names: Vec<String> = written
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        println!("reports: {}", names.join(", "));
    }
    if !report.passed() {
        println!("replay: {replay}");
    }
    Ok(match (report.passed(), cli.expect_violations) {
        (true, false) => ExitCode::SUCCESS,
        (false, false) => ExitCode::FAILURE,
        (false, true) => {
            println!("as expected, the harness caught the violations of this build");
            ExitCode::SUCCESS
        }
        (true, true) => {
            println!("expected violations, found none: the harness failed to catch the race");
            ExitCode::FAILURE
        }
    })
}
