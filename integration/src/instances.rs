//! Instances the harness starts itself, so it can kill one with SIGKILL and start it again.
use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::client::Client;

pub struct SpawnedInstance {
    binary: PathBuf,
    port: u16,
    database_url: String,
    jwt_secret: String,
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
        let mut instance = Self {
            binary,
            port,
            database_url: database_url.to_string(),
            jwt_secret: jwt_secret.to_string(),
            child: None,
            log_path: std::env::temp_dir().join(format!("home-visits-{port}.log")),
        };
        instance.launch().await?;
        Ok(instance)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .env("BIND_ADDR", format!("127.0.0.1:{}", self.port))
            .env("JWT_SECRET", &self.jwt_secret)
            .env("APP_ENV", "development")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Polls `/readyz` until the instance answers; it binds and migrates first.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = Client::new(&self.url())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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
            if client.is_ready().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("instance on port {} not ready after 60 s", self.port)
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
