//! A `nats-server -js` of the harness's (and the tests') own: a temporary store, a port the server
//! picks itself, and a restart that keeps both, as a real broker restart would.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use async_nats::jetstream;
use tokio::process::{Child, Command};

pub struct NatsServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else Debian's `/usr/sbin/nats-server`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(binary));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|binary| binary.exists())
        .context(
            "nats-server not found: the event tests need a NATS server with JetStream \
             (Debian/Ubuntu: `apt-get install nats-server`), or set NATS_SERVER_BIN",
        )
}

impl NatsServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "home-visits-nats-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("ports"))?;
        let mut server = Self {
            binary: find_binary()?,
            dir,
            port: 0,
            child: None,
        };
        server.launch().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// SIGKILL: what the broker has acknowledged is on disk; the rest is the clients' to resend.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch().await
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let ports_dir = self.dir.join("ports");
        for entry in std::fs::read_dir(&ports_dir)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        // -1: the server picks a free port and writes it to the ports file (no probe-then-bind race).
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        self.port = self.wait_for_port(&ports_dir).await?;
        self.wait_for_jetstream().await
    }

    async fn wait_for_port(&mut self, ports_dir: &Path) -> anyhow::Result<u16> {
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "nats-server exited with {status}; see {}",
                    self.dir.join("server.log").display()
                );
            }
            if let Some(port) = read_client_port(ports_dir) {
                return Ok(port);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("nats-server wrote no ports file in {}", ports_dir.display())
    }

    async fn wait_for_jetstream(&self) -> anyhow::Result<()> {
        let client = async_nats::connect(self.url()).await?;
        let mut last_error = String::new();
        for _ in 0..200 {
            // Answered by JetStream itself once it is up (no responders before).
            match client.request("$JS.API.INFO", "".into()).await {
                Ok(_) => return Ok(()),
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("JetStream did not come up on {}: {last_error}", self.url())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ports file: `{"nats": ["nats://127.0.0.1:4222"], ...}`.
fn read_client_port(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports["nats"][0].as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// One message of the stream as it was stored.
#[derive(Debug, Clone)]
pub struct StreamedMessage {
    pub sequence: u64,
    pub subject: String,
    /// The `Nats-Msg-Id` header the broker deduplicated by.
    pub message_id: Option<String>,
    pub envelope: serde_json::Value,
}

/// Every message of `stream`, in stream order.
pub async fn read_stream(url: &str, stream: &str) -> anyhow::Result<Vec<StreamedMessage>> {
    let client = async_nats::connect(url).await?;
    let jetstream = jetstream::new(client);
    let stream = jetstream.get_stream(stream).await?;
    let info = stream.get_info().await?;
    let mut messages = Vec::new();
    if info.state.messages == 0 {
        return Ok(messages);
    }
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let raw = stream.get_raw_message(sequence).await?;
        messages.push(StreamedMessage {
            sequence,
            subject: raw.subject.to_string(),
            message_id: raw
                .headers
                .get("Nats-Msg-Id")
                .map(|value| value.as_str().to_string()),
            envelope: serde_json::from_slice(&raw.payload)?,
        });
    }
    Ok(messages)
}
