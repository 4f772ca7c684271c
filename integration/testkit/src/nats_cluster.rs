//! Three `nats-server` nodes clustered on this machine, JetStream on each: what a deployment's
//! broker looks like, small. A node can be killed (SIGKILL) and started again with its store, as
//! a machine that crashed and came back.
use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use async_nats::jetstream;
use tokio::process::{Child, Command};

use crate::{nats::find_binary, servers::free_port};

pub const NODES: usize = 3;

struct Node {
    name: String,
    config: PathBuf,
    client_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    binary: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "home-visits-nats-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let client_ports = (0..NODES)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let route_ports = (0..NODES)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
            .collect();
        let mut nodes = Vec::with_capacity(NODES);
        for index in 0..NODES {
            let name = format!("n{}", index + 1);
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{\n  name: home_visits\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
                    client = client_ports[index],
                    store = dir.join(&name).display(),
                    route = route_ports[index],
                    routes = routes.join(", "),
                ),
            )?;
            nodes.push(Node {
                name,
                config,
                client_port: client_ports[index],
                child: None,
            });
        }
        let mut cluster = Self { binary, dir, nodes };
        for index in 0..NODES {
            cluster.launch(index)?;
        }
        cluster.wait_for_jetstream().await?;
        Ok(cluster)
    }

    /// Every node's URL, comma-separated: what `NATS_URL` takes.
    pub fn urls(&self) -> String {
        self.node_urls().join(",")
    }

    /// One URL per node.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect()
    }

    /// The index of the node named `name` (`n1`, `n2`, `n3`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The name of the node leading `stream`'s replicas.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<String> {
        let client = async_nats::connect(self.node_urls()).await?;
        let mut stream = jetstream::new(client).get_stream(stream).await?;
        let info = stream.info().await?;
        info.cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone())
            .context("the stream reports no leader")
    }

    /// SIGKILL of one node: what it acknowledged is in its store (or on the other replicas).
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts a killed node again with its store; it rejoins and catches up.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.kill(index).await?;
        self.launch(index)?;
        self.wait_for_node(index).await
    }

    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", node.name)))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Until JetStream answers through the cluster: its meta leader is elected. Each ask is
    /// bounded by a second (a node still starting would otherwise hold a request for the client's
    /// default ten).
    async fn wait_for_jetstream(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last_error = String::from("no node answered");
        while tokio::time::Instant::now() < deadline {
            let options = async_nats::ConnectOptions::new()
                .request_timeout(Some(Duration::from_secs(1)))
                .connection_timeout(Duration::from_secs(1));
            match options.connect(self.node_urls()).await {
                Ok(client) => match client.request("$JS.API.INFO", "".into()).await {
                    Ok(reply) => {
                        let info: serde_json::Value =
                            serde_json::from_slice(&reply.payload).unwrap_or_default();
                        if info.get("error").is_none() {
                            return Ok(());
                        }
                        last_error = info["error"].to_string();
                    }
                    Err(error) => last_error = error.to_string(),
                },
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "the NATS cluster's JetStream did not come up within 30 s ({last_error}); logs in {}",
            self.dir.display()
        )
    }

    /// Until the node at `index` accepts clients again.
    async fn wait_for_node(&self, index: usize) -> anyhow::Result<()> {
        let port = self.nodes[index].client_port;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "node {} did not listen again within 15 s",
            self.nodes[index].name
        )
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
