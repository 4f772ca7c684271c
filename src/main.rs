use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use home_visits::{api, config::Config, db, local_postgres, startup, telemetry};

// glibc's malloc was ~8% of an instance's CPU under load (its arena locks and consolidation);
// mimalloc measured +4-8% req/s on the bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A GraphQL service for booking home visits paid in minutes. Settings come from the
/// environment (and `.env` in development): see docs/configuration.md.
#[derive(Parser)]
#[command(name = "home-visits", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default); provisions a local PostgreSQL when DATABASE_URL is unset
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
    /// Print the GraphQL SDL (the content of schema.graphql)
    Schema {
        /// The Apollo Federation v2 subgraph's SDL instead (what FEDERATION=on serves)
        #[arg(long)]
        subgraph: bool,
    },
    /// Print the version
    Version,
    /// The project-local PostgreSQL (under LOCAL_POSTGRES_DIR)
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// The event log
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
}

#[derive(Subcommand)]
enum DbAction {
    /// Start it and print its URL
    Start,
    /// Stop it
    Stop,
}

#[derive(Subcommand)]
enum EventsAction {
    /// Print the event log as JSON lines, in log order
    Tail {
        /// Start after the event at this position (default: from the start)
        #[arg(long, value_name = "POSITION")]
        from: Option<i64>,
        /// Keep printing new events as they commit
        #[arg(long)]
        follow: bool,
    },
    /// List the events consumers gave up on (JSON lines)
    DeadLetters {
        /// Hand this dead letter to its consumer again
        #[arg(long, value_name = "ID")]
        retry: Option<i64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    match command {
        Command::Schema { subgraph } => {
            print!(
                "{}",
                if subgraph {
                    api::subgraph_sdl()
                } else {
                    api::sdl()
                }
            );
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("home-visits {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    telemetry::init();
    let outcome = match command {
        Command::Serve => serve().await,
        Command::Migrate => migrate().await,
        Command::Db { action } => local_database(action).await,
        Command::Events {
            action: EventsAction::Tail { from, follow },
        } => tail_events(from, follow).await,
        Command::Events {
            action: EventsAction::DeadLetters { retry },
        } => dead_letters(retry).await,
        Command::Schema { .. } | Command::Version => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let app = startup::build(config).await?;
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    let db = startup::connect_database(&mut config).await?;
    db::migrate_for(&config, &db).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn local_database(action: DbAction) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match action {
        DbAction::Start => {
            let url = local_postgres::provision(&config).await?;
            println!("{}", url.expose_secret());
            Ok(())
        }
        DbAction::Stop => local_postgres::stop(&config.database.local_postgres_dir).await,
    }
}

async fn tail_events(from: Option<i64>, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;

    use home_visits::events::log::{self, LogPosition};

    let mut config = Config::from_env()?;
    let db = startup::connect_database(&mut config).await?;
    let mut cursor = match from {
        None => LogPosition::default(),
        Some(position) => log::position_of(&db, position)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no event at position {position}"))?,
    };
    let mut stdout = std::io::stdout().lock();
    loop {
        let batch = log::read_after(&db, cursor, 1_000).await?;
        for event in &batch {
            writeln!(stdout, "{}", serde_json::to_string(event)?)?;
        }
        stdout.flush()?;
        match batch.last() {
            Some(last) => cursor = last.log_position(),
            None if follow => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            None => return Ok(()),
        }
    }
}

async fn dead_letters(retry: Option<i64>) -> anyhow::Result<()> {
    use home_visits::{events::consumer, notifications::NotificationsHandler};

    let mut config = Config::from_env()?;
    let db = startup::connect_database(&mut config).await?;
    match retry {
        None => {
            for letter in consumer::dead_letters(&db, None).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        // Notifications is the one consumer today; a second would be chosen by the letter's name.
        Some(id) => match consumer::redrive(&db, &NotificationsHandler, id).await? {
            Some(outcome) => println!("dead letter {id}: {outcome:?}"),
            None => anyhow::bail!("no dead letter {id} of the notifications consumer"),
        },
    }
    Ok(())
}
