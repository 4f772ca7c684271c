//! Instances the harness starts itself, so it can kill one with SIGKILL and start it again.
use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::client::Client;

pub struct SpawnedInstance {
    binary: PathBuf,
    port: u16,
    database_url: String,
    jwt_secret: String,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl SpawnedInstance {
    pub async fn start(
        binary: PathBuf,
        port: u16,
        database_url: &str,
        jwt_secret: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(binary, port, database_url, jwt_secret, Vec::new()).await
    }

    /// Like [`start`](Self::start), with more environment for the instance (e.g. pool size).
    /// Port 0 lets the instance bind any free port (read back from its log), so that no port is
    /// probed free and then raced for; a restart binds the port it had.
    pub async fn start_with(
        binary: PathBuf,
        port: u16,
        database_url: &str,
        jwt_secret: &str,
        extra_env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut instance = Self {
            binary,
            port,
            database_url: database_url.to_string(),
            jwt_secret: jwt_secret.to_string(),
            extra_env,
            child: None,
            log_path: std::env::temp_dir()
                .join(format!("home-visits-{}.log", uuid::Uuid::new_v4().simple())),
        };
        instance.launch().await?;
        Ok(instance)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// The most memory the process has held (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.memory_status("VmHWM:")
    }

    /// Resident memory now.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.memory_status("VmRSS:")
    }

    fn memory_status(&self, field: &str) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The binary it runs.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let log_start = log.metadata()?.len();
        let child = Command::new(&self.binary)
            .arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .env("BIND_ADDR", format!("127.0.0.1:{}", self.port))
            .env("JWT_SECRET", &self.jwt_secret)
            .env("APP_ENV", "development")
            // The start-up line says which port was bound; uncoloured, so it can be read back.
            .env("RUST_LOG", "warn,home_visits::startup=info")
            .env("NO_COLOR", "1")
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready(log_start).await
    }

    /// Waits for this launch's "listening" line (which names the bound port), then polls `/readyz`.
    /// Reading the line first means the server that answers is our child, not a stranger that took
    /// the port.
    async fn wait_ready(&mut self, log_start: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut client = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "instance on port {} exited with {status}; see {}",
                    self.port,
                    self.log_path.display()
                );
            }
            if client.is_none()
                && let Some(port) = self.bound_port(log_start)
            {
                self.port = port;
                client = Some(Client::new(&self.url())?);
            }
            if let Some(client) = &client
                && client.is_ready().await
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "instance (port {}) not ready after 60 s; see {}",
            self.port,
            self.log_path.display()
        )
    }

    /// The port in the instance's `listening port=N` line, written after `log_start`.
    fn bound_port(&self, log_start: u64) -> Option<u16> {
        let log = std::fs::read(&self.log_path).ok()?;
        let written = String::from_utf8_lossy(log.get(usize::try_from(log_start).ok()?..)?);
        let after = written.split("listening port=").nth(1)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// SIGKILL: no graceful shutdown, in-flight requests are cut.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch().await
    }
}
