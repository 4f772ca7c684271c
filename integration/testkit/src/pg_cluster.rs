//! PostgreSQL clusters of a test's own: a primary from `initdb`, and a streaming standby of it
//! from `pg_basebackup -R`, each in a temporary directory on a free port. PostgreSQL refuses to
//! run as root, so as root its binaries run as the `postgres` user.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

use crate::servers::{free_port, running_as_root};

pub struct Cluster {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// `POSTGRES_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin`, else `PATH`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_basebackup").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    newest
        .or_else(|| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .find(|dir| dir.join("pg_basebackup").exists() && dir.join("pg_ctl").exists())
        })
        .context(
            "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) found: install them \
             (Debian/Ubuntu: `apt-get install postgresql`) or set POSTGRES_BIN_DIR",
        )
}

impl Cluster {
    /// A new primary cluster, started, with a database named `database`.
    pub async fn primary(database: &str) -> anyhow::Result<Self> {
        let cluster = Self::new()?;
        let dir = cluster.dir.display().to_string();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &dir,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )
            .await?;
        cluster.start().await?;
        let admin = Database::connect(cluster.url("postgres")).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
            .await?;
        admin.close().await?;
        Ok(cluster)
    }

    /// A streaming standby of `primary`, started and replaying.
    pub async fn standby_of(primary: &Cluster) -> anyhow::Result<Self> {
        Self::standby_of_port(primary.port).await
    }

    /// A streaming standby of the PostgreSQL on 127.0.0.1:`port` (which must admit replication
    /// connections from `postgres`), started and replaying.
    pub async fn standby_of_port(port: u16) -> anyhow::Result<Self> {
        let cluster = Self::new()?;
        let dir = cluster.dir.display().to_string();
        let port = port.to_string();
        cluster
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    &dir,
                    "-R",
                    "-X",
                    "stream",
                    // At once, not spread over the checkpoint interval (minutes).
                    "--checkpoint=fast",
                ],
            )
            .await?;
        cluster.start().await?;
        Ok(cluster)
    }

    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "home-visits-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        // PostgreSQL starts only from a data directory no one else may read.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if running_as_root() {
            let status = Command::new("chown").arg("postgres:").arg(&dir).status()?;
            anyhow::ensure!(
                status.success(),
                "cannot hand {} to postgres",
                dir.display()
            );
        }
        Ok(Self {
            bin_dir: find_binaries()?,
            dir,
            port: free_port()?,
        })
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts it on its port (again, after [`stop`](Self::stop)). A hot standby needs at least
    /// its primary's `max_connections`: 500 is above the project's local cluster's 300.
    pub async fn start(&self) -> anyhow::Result<()> {
        let dir = self.dir.display().to_string();
        let log = self.dir.join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=500 -c fsync=off",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "start", "-D", &dir, "-l", &log, "-w", "-t", "60", "-o", &options,
            ],
        )
        .await
    }

    /// Stops it at once (`-m immediate`), as a crash would.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let dir = self.dir.display().to_string();
        self.run("pg_ctl", &["stop", "-D", &dir, "-m", "immediate", "-w"])
            .await
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(program);
        let mut command = if running_as_root() {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            tokio::process::Command::new(&binary)
        };
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            command
                .args(args)
                .current_dir(std::env::temp_dir())
                .output(),
        )
        .await
        .with_context(|| format!("{program} took over two minutes"))?
        .with_context(|| format!("cannot run {}", binary.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}{}; see {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_path().display()
        );
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The postmaster's pid, from `postmaster.pid`, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            Command::new(&pg_ctl)
        };
        let _ = command
            .arg("stop")
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
