//! A `graphql-transport-ws` client, speaking the protocol as the standard clients do (it answers
//! the server's pings), for the tests, the harness's subscribers and the bench.
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

pub const PROTOCOL: &str = "graphql-transport-ws";

/// What came from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A protocol message (`connection_ack`, `next`, `error`, `complete`, `pong`).
    Message(Value),
    /// The server closed the socket with this code and reason.
    Closed { code: u16, reason: String },
}

/// `/graphql` of `base_url` as a WebSocket URL.
fn graphql_ws_url(base_url: &str) -> String {
    format!(
        "{}/graphql",
        base_url
            .trim_end_matches('/')
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    )
}

pub struct LiveClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl LiveClient {
    /// Opens `/graphql` of `base_url` (`http://host:port`) offering the protocol.
    pub async fn open(base_url: &str) -> anyhow::Result<Self> {
        Self::open_offering(base_url, Some(PROTOCOL)).await
    }

    /// Opens the socket offering `protocol` (none: no `Sec-WebSocket-Protocol` header).
    pub async fn open_offering(base_url: &str, protocol: Option<&str>) -> anyhow::Result<Self> {
        let url = graphql_ws_url(base_url);
        let mut request = url.as_str().into_client_request()?;
        if let Some(protocol) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol)?);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("WebSocket to {url}"))?;
        Ok(Self { socket })
    }

    /// Opens a socket and has `token` accepted (`connection_ack`).
    pub async fn connect(base_url: &str, token: &str) -> anyhow::Result<Self> {
        let client = Self::open(base_url).await?;
        client.accepted(token).await
    }

    /// As [`connect`](Self::connect), from the local address `source` (one address reaches a
    /// server's port over some 28,000 ephemeral ports; all of 127.0.0.0/8 is loopback) and with
    /// small buffers: what a load generator holding many idle sockets needs.
    pub async fn connect_lean(
        base_url: &str,
        token: &str,
        source: std::net::IpAddr,
    ) -> anyhow::Result<Self> {
        use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
        let url = graphql_ws_url(base_url);
        let mut request = url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        let host = request.uri().host().context("no host")?.to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let server = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .context("the host has no address")?;
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        let stream = socket
            .connect(server)
            .await
            .with_context(|| format!("TCP from {source} to {server}"))?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .with_context(|| format!("WebSocket to {url}"))?;
        Self { socket }.accepted(token).await
    }

    async fn accepted(mut self, token: &str) -> anyhow::Result<Self> {
        let client = &mut self;
        client
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await?;
        match client.next(Duration::from_secs(10)).await {
            Some(Frame::Message(message)) if message["type"] == "connection_ack" => Ok(self),
            other => bail!("no connection_ack: {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.send_text(&message.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.send(Message::binary(bytes.to_vec())).await?;
        Ok(())
    }

    pub async fn subscribe(
        &mut self,
        id: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<()> {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } }))
            .await
    }

    /// Subscribes, then waits for the answer to a ping sent after it: the server handles a
    /// `subscribe` (up to joining its live feed) before it reads the next message, so every change
    /// made after this returns is one the subscription sees.
    pub async fn subscribe_confirmed(
        &mut self,
        id: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<()> {
        self.subscribe(id, query, variables).await?;
        self.send(json!({ "type": "ping" })).await?;
        match self.next(Duration::from_secs(30)).await {
            Some(Frame::Message(message)) if message["type"] == "pong" => Ok(()),
            other => bail!("subscribing {id}: expected the pong, got {other:?}"),
        }
    }

    /// The next protocol message or the close, within `wait`; server pings are answered and
    /// skipped. `None`: nothing came in time (or the connection dropped without a close).
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match message.ok()? {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(text.as_str()).ok()?;
                    if message["type"] == "ping" {
                        let _ = self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(Frame::Message(message));
                }
                Message::Close(frame) => {
                    return Some(match frame {
                        Some(frame) => Frame::Closed {
                            code: frame.code.into(),
                            reason: frame.reason.to_string(),
                        },
                        None => Frame::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    });
                }
                _ => continue,
            }
        }
    }

    /// Reads until the server closes the socket (within `wait`): its code and reason.
    pub async fn closed(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Frame::Closed { code, reason } => return Some((code, reason)),
                Frame::Message(_) => continue,
            }
        }
    }

    /// The `next` payloads of subscription `id`, until `count` arrived or `wait` passed.
    pub async fn payloads(&mut self, id: &str, count: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut payloads = Vec::new();
        while payloads.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Frame::Message(message))
                    if message["type"] == "next" && message["id"] == id =>
                {
                    payloads.push(message["payload"].clone());
                }
                Some(Frame::Message(_)) => {}
                Some(Frame::Closed { .. }) | None => break,
            }
        }
        payloads
    }
}
