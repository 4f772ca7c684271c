//! A project-local PostgreSQL for development and tests, so a fresh checkout runs with no database
//! set up: `initdb` and `pg_ctl` from the machine's server packages, a cluster under
//! `LOCAL_POSTGRES_DIR`. Never used in production, where `DATABASE_URL` is required.
use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use secrecy::SecretString;

use crate::{
    config::{Config, Environment},
    db,
};

/// Name of the database the service uses inside its self-provisioned cluster.
pub const LOCAL_DATABASE: &str = "home_visits";

/// Starts (creating it if needed) the local cluster and its service database; returns that
/// database's URL.
pub async fn provision(config: &Config) -> anyhow::Result<SecretString> {
    if config.environment == Environment::Production {
        bail!(
            "DATABASE_URL must be set in production: the local PostgreSQL is for development only"
        );
    }
    let admin_url = ensure_running(
        &config.database.local_postgres_dir,
        config.database.local_postgres_port,
    )
    .await?;
    db::create_database_if_missing(&admin_url, LOCAL_DATABASE).await?;
    Ok(db::with_database(&admin_url, LOCAL_DATABASE))
}

/// Makes sure the project-local cluster in `data_dir` exists and runs on `port`; returns a URL to
/// its `postgres` database. Safe to call from several processes at once.
pub async fn ensure_running(data_dir: &Path, port: u16) -> anyhow::Result<SecretString> {
    let data_dir = data_dir.to_path_buf();
    let port =
        tokio::task::spawn_blocking(move || LocalPostgres::new(data_dir, port)?.ensure_running())
            .await
            .context("local PostgreSQL set-up panicked")??;
    Ok(SecretString::from(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres"
    )))
}

/// Stops the project-local cluster if it runs.
pub async fn stop(data_dir: &Path) -> anyhow::Result<()> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let local = LocalPostgres::new(data_dir, 0)?;
        if !local.is_running() {
            return Ok(());
        }
        local.run("pg_ctl", |command| {
            command
                .arg("stop")
                .arg("-D")
                .arg(&local.data_dir)
                .args(["-m", "fast", "-w"]);
        })
    })
    .await
    .context("local PostgreSQL shutdown panicked")?
}

struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root, so as root its binaries run as the `postgres` user.
    run_as_postgres: bool,
}

impl LocalPostgres {
    fn new(data_dir: PathBuf, port: u16) -> anyhow::Result<Self> {
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(&data_dir)?;
        let run_as_postgres = fs::metadata("/proc/self")
            .map(|meta| meta.uid() == 0)
            .unwrap_or(false);
        Ok(Self {
            bin_dir: find_postgres_binaries()?,
            data_dir,
            port,
            run_as_postgres,
        })
    }

    /// Returns the port the cluster listens on: the configured one, or the one an already running
    /// cluster was started with.
    fn ensure_running(&self) -> anyhow::Result<u16> {
        // Serialises concurrent starters (parallel tests, two instances) across processes.
        let lock_path = self.data_dir.with_extension("lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock()?;

        if self.run_as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&self.data_dir)
                .status()?;
            if !status.success() {
                bail!(
                    "cannot hand {} to the `postgres` user; running as root needs an unprivileged \
                     `postgres` user (Debian's postgresql package creates it)",
                    self.data_dir.display()
                );
            }
        }
        if !self.data_dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %self.data_dir.display(), "creating a local PostgreSQL cluster");
            self.run("initdb", |command| {
                command.arg("-D").arg(&self.data_dir).args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]);
            })?;
        }
        if self.is_running() {
            return Ok(self.running_port().unwrap_or(self.port));
        }
        // Another checkout's cluster may hold the usual port; any free one will do, since a running
        // cluster is found again through the port in its postmaster.pid.
        let port = if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
            self.port
        } else {
            let free = std::net::TcpListener::bind(("127.0.0.1", 0))?
                .local_addr()?
                .port();
            tracing::warn!(
                taken = self.port,
                chosen = free,
                "port taken: the local PostgreSQL uses another"
            );
            free
        };
        tracing::info!(port, "starting the local PostgreSQL cluster");
        // A Unix socket path may not exceed ~107 bytes; from a deeply nested checkout, TCP only.
        let socket_dir = self.data_dir.display().to_string();
        let socket_dir = if socket_dir.len() + "/.s.PGSQL.65535".len() < 100 {
            socket_dir
        } else {
            String::new()
        };
        let server_options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{socket_dir}' -c max_connections=300"
        );
        self.run("pg_ctl", |command| {
            command
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(self.data_dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &server_options]);
        })
        .with_context(|| {
            format!(
                "the local PostgreSQL did not start on port {port}; see {}",
                self.data_dir.join("server.log").display()
            )
        })?;
        Ok(port)
    }

    /// The fourth line of `postmaster.pid` is the port the server was started with.
    fn running_port(&self) -> Option<u16> {
        let pid_file = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn is_running(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
            && self
                .run("pg_ctl", |command| {
                    command.arg("status").arg("-D").arg(&self.data_dir);
                })
                .is_ok()
    }

    fn run(&self, program: &str, configure: impl FnOnce(&mut Command)) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        configure(&mut command);
        let output = command
            .current_dir(&self.data_dir)
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// `POSTGRES_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin`, else `initdb` on `PATH`.
fn find_postgres_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let newest_debian = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    if let Some(bin) = newest_debian {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists());
    on_path.context(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install them \
         (Debian/Ubuntu: `apt-get install postgresql`), set POSTGRES_BIN_DIR, or set DATABASE_URL",
    )
}
