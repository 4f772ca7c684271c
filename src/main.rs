use std::process::ExitCode;

use secrecy::ExposeSecret;

use home_visits::{api, config::Config, db, local_postgres, startup, telemetry};

// glibc's malloc was ~8% of an instance's CPU under load (its arena locks and consolidation);
// mimalloc measured +4-8% req/s on the bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: home-visits [serve | migrate | schema]

  serve    run the service (the default); provisions a local PostgreSQL when DATABASE_URL is unset
  migrate  apply pending database migrations and exit
  schema   print the GraphQL SDL (the content of schema.graphql)
  version  print the version
  db start start the project-local PostgreSQL (under LOCAL_POSTGRES_DIR) and print its URL
  db stop  stop it
  events tail [--from POSITION] [--follow]
           print the event log as JSON lines, in log order, after the event at POSITION
           (default: from the start); --follow keeps printing new events as they commit
  events dead-letters [--retry ID]
           list the events consumers gave up on (JSON lines), or hand dead letter ID to its
           consumer again";

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        Some("schema") => {
            print!("{}", api::sdl());
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version" | "version") => {
            println!("home-visits {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    telemetry::init();
    let outcome = match command.as_deref() {
        None | Some("serve") => serve().await,
        Some("migrate") => migrate().await,
        Some("db") => local_database(std::env::args().nth(2).as_deref()).await,
        Some("events") => events(std::env::args().skip(2).collect()).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
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
    db::migrate(&db).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn local_database(action: Option<&str>) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match action {
        Some("start") => {
            let url = local_postgres::provision(&config).await?;
            println!("{}", url.expose_secret());
            Ok(())
        }
        Some("stop") => local_postgres::stop(&config.local_postgres_dir).await,
        _ => anyhow::bail!("usage: home-visits db start|stop"),
    }
}

async fn events(args: Vec<String>) -> anyhow::Result<()> {
    use std::io::Write;

    use home_visits::events::log::{self, LogPosition};

    let usage = "usage: home-visits events tail [--from POSITION] [--follow] | events dead-letters [--retry ID]";
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("tail") => {}
        Some("dead-letters") => return dead_letters(args.collect(), usage).await,
        _ => anyhow::bail!("{usage}"),
    }
    let (mut from, mut follow) = (None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--follow" => follow = true,
            "--from" => {
                let position = args.next().and_then(|value| value.parse::<i64>().ok());
                from = Some(position.ok_or_else(|| anyhow::anyhow!("{usage}"))?);
            }
            _ => anyhow::bail!("{usage}"),
        }
    }
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

async fn dead_letters(args: Vec<String>, usage: &str) -> anyhow::Result<()> {
    use home_visits::{events::consumer, notifications::NotificationsHandler};

    let retry = match args.as_slice() {
        [] => None,
        [flag, id] if flag == "--retry" => {
            Some(id.parse::<i64>().map_err(|_| anyhow::anyhow!("{usage}"))?)
        }
        _ => anyhow::bail!("{usage}"),
    };
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
