//! The one way this service connects to NATS: a client that starts while the broker is down (so
//! mutations go on) and reconnects for ever.
use std::time::Duration;

use async_nats::ConnectOptions;

/// Options for a client named `name` (visible in the server's connection list).
pub fn options(name: &str) -> ConnectOptions {
    ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
}

/// Connects to one cluster's `servers` with `options`; fails only on a malformed address.
pub async fn connect(
    servers: &[String],
    options: ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let addresses = servers
        .iter()
        .map(|server| server.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(options.connect(addresses).await?)
}
