use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use integration::{
    bank::BankOptions, client::Client, instances::SpawnedInstance, run_suite, scenarios::Harness,
    select_scenarios,
};
use sea_orm::{ConnectionTrait, Database};

/// Hammers home-visits instances with racing GraphQL calls and checks the books in PostgreSQL.
#[derive(Parser)]
#[command(name = "integration")]
struct Cli {
    /// An instance's base URL (repeat for each; calls alternate between them). With --spawn, the
    /// harness starts an instance on each URL's port.
    #[arg(long = "instance", required = true)]
    instances: Vec<String>,
    /// The database the instances use; read only for the invariant checks.
    #[arg(long)]
    database_url: String,
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
    /// Run without injected faults.
    #[arg(long)]
    no_faults: bool,
    /// Succeed only if the suite finds a violation: proves it catches a build without row locks.
    #[arg(long)]
    expect_violations: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("integration: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let selected = select_scenarios(&cli.scenario)?;
    let seed = cli.seed.unwrap_or_else(rand::random);
    if cli.fresh_database {
        recreate_database(&cli.database_url).await?;
    }
    let mut spawned = Vec::new();
    if let Some(binary) = &cli.spawn {
        let jwt_secret = format!("harness-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for url in &cli.instances {
            let port = reqwest::Url::parse(url)?
                .port_or_known_default()
                .context("an --instance URL needs a port")?;
            spawned.push(
                SpawnedInstance::start(binary.clone(), port, &cli.database_url, &jwt_secret)
                    .await?,
            );
        }
    }
    let clients = cli
        .instances
        .iter()
        .map(|url| Client::new(url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let db = Database::connect(&cli.database_url)
        .await
        .context("cannot reach --database-url")?;
    let harness = Harness::new(clients, db);
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
    let report = run_suite(&harness, instances, &selected, &bank).await?;
    println!("{}", report.table());
    for instance in &mut spawned {
        instance.kill().await?;
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

async fn recreate_database(database_url: &str) -> anyhow::Result<()> {
    let mut admin_url = reqwest::Url::parse(database_url)?;
    let name = admin_url.path().trim_start_matches('/').to_string();
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--fresh-database needs a plain database name in --database-url"
    );
    admin_url.set_path("/postgres");
    let admin = Database::connect(admin_url.as_str()).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    Ok(())
}
