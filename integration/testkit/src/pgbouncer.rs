//! A PgBouncer of the tests' (and the harness's) own, in front of a PostgreSQL they already
//! have: a temporary directory, a free port, `pool_mode` as asked. PgBouncer refuses to run as
//! root, so as root it runs as the `postgres` user, as PostgreSQL's own binaries do.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::servers::{free_port, running_as_root};

pub struct PgBouncer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// `PGBOUNCER_BIN`, else `pgbouncer` on `PATH`, else Debian's `/usr/sbin/pgbouncer`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("PGBOUNCER_BIN") {
        return Ok(PathBuf::from(binary));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|binary| binary.exists())
        .context(
            "pgbouncer not found: the pooler tests need PgBouncer (Debian/Ubuntu: `apt-get \
             install pgbouncer`), or set PGBOUNCER_BIN",
        )
}

impl PgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL of `upstream` (a URL; its host, port and user
    /// are used, any database is passed through), in `pool_mode` (`transaction`, `statement`),
    /// with at most `server_connections` to PostgreSQL per database: fewer than its clients
    /// hold, so they share them.
    pub async fn start(
        upstream: &str,
        pool_mode: &str,
        server_connections: u32,
    ) -> anyhow::Result<Self> {
        let upstream = reqwest::Url::parse(upstream).context("the upstream PostgreSQL URL")?;
        let dir = std::env::temp_dir().join(format!(
            "home-visits-pgbouncer-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let user = match upstream.username() {
            "" => "postgres",
            user => user,
        };
        let config = format!(
            "[databases]\n\
             * = host={host} port={upstream_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = {pool_mode}\n\
             max_client_conn = 2000\n\
             default_pool_size = {server_connections}\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            host = upstream.host_str().unwrap_or("127.0.0.1"),
            upstream_port = upstream.port().unwrap_or(5432),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config)?;
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))?;
        if running_as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(
                status.success(),
                "cannot hand {} to postgres",
                dir.display()
            );
        }
        let mut bouncer = Self {
            binary: find_binary()?,
            dir,
            port,
            child: None,
        };
        bouncer.launch().await?;
        Ok(bouncer)
    }

    /// A URL to `database` through the pooler, as `user` (the upstream's).
    pub fn url(&self, upstream: &str) -> String {
        let mut url = reqwest::Url::parse(upstream).expect("a URL parsed at start");
        let _ = url.set_port(Some(self.port));
        let _ = url.set_host(Some("127.0.0.1"));
        url.to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pooler's own process (from its pidfile), for metering its CPU.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pgbouncer.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }

    /// SIGKILL: every client connection and every server connection it held are cut.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.kill_pooler();
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        // Gone when its port is: a restart must not find the old one still listening.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pgbouncer still listens on {} 5 s after kill -9",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// SIGKILL to PgBouncer itself: as root it runs under `runuser`, and killing that leaves
    /// PgBouncer running.
    fn kill_pooler(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(self.dir.join("pgbouncer.pid"));
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch().await
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("pgbouncer.ini");
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&self.binary);
            command
        } else {
            Command::new(&self.binary)
        };
        let child = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_until_listening(&config).await
    }

    async fn wait_until_listening(&mut self, config: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "pgbouncer ({}) exited with {status}; see {}",
                    config.display(),
                    self.log_path().display()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!(
            "pgbouncer did not listen on {} within 15 s; see {}",
            self.port,
            self.log_path().display()
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.kill_pooler();
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
