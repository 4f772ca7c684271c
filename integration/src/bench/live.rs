//! Live updates under the bench: how long a committed change takes to reach subscribers while the
//! workloads run (commit time from the event's `occurredAt`, same clock), and what idle
//! subscriptions cost an instance in memory. Subscribers run on a thread and runtime of their own,
//! so the load generator's busy runtime does not delay their clocks.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::stats::Measurement;
use crate::{
    instances::SpawnedInstance,
    live::{Frame, LiveClient},
};

const OPEN_VISITS: &str = "subscription { openVisits { eventId occurredAt } }";
const MY_VISITS: &str = "subscription { myVisits { eventId } }";

/// Subscribers to `openVisits` (every request and every completion of a requested visit reaches
/// each of them), spread over the instances.
pub struct Subscribers {
    measured: Arc<Mutex<Measurement>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

async fn subscribed(url: &str, token: &str, query: &str) -> anyhow::Result<LiveClient> {
    let mut socket = LiveClient::connect(url, token).await?;
    socket.subscribe_confirmed("live", query, json!({})).await?;
    Ok(socket)
}

impl Subscribers {
    pub fn start(urls: Vec<String>, tokens: Vec<String>, count: usize) -> anyhow::Result<Self> {
        let measured = Arc::new(Mutex::new(Measurement::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ready, is_ready) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let into_thread = measured.clone();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(error.into()));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut sockets = Vec::with_capacity(count);
                for index in 0..count {
                    let url = &urls[index % urls.len()];
                    // Any member sees the others' requests.
                    let token = &tokens[index % tokens.len()];
                    match subscribed(url, token, OPEN_VISITS).await {
                        Ok(socket) => sockets.push(socket),
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    }
                }
                let _ = ready.send(Ok(()));
                let readers = sockets.into_iter().map(|mut socket| {
                    let measured = into_thread.clone();
                    let mut stopped = stopped.clone();
                    async move {
                        loop {
                            let frame = tokio::select! {
                                frame = socket.next(Duration::from_secs(3600)) => frame,
                                _ = stopped.changed() => return,
                            };
                            let Some(Frame::Message(message)) = frame else {
                                return;
                            };
                            let committed = message["payload"]["data"]["openVisits"]["occurredAt"]
                                .as_str()
                                .and_then(|at| at.parse::<DateTime<Utc>>().ok());
                            if let Some(committed) = committed {
                                let latency = (Utc::now() - committed).to_std().unwrap_or_default();
                                if let Ok(mut measured) = measured.lock() {
                                    measured.record(latency);
                                }
                            }
                        }
                    }
                });
                futures::future::join_all(readers).await;
            });
        });
        is_ready
            .recv()
            .context("the subscriber thread ended before it was ready")??;
        Ok(Self {
            measured,
            stop,
            thread,
        })
    }

    /// What was delivered since the last call.
    pub fn take(&self) -> Measurement {
        self.measured
            .lock()
            .map(|mut measured| std::mem::take(&mut *measured))
            .unwrap_or_default()
    }

    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// The instance's resident memory before and after `count` idle sockets with one subscription
/// each, in bytes.
pub async fn idle_cost(
    instance: &SpawnedInstance,
    tokens: &[String],
    count: usize,
) -> anyhow::Result<(u64, u64)> {
    let before = instance.rss_bytes().context("no RSS for the instance")?;
    let url = instance.url();
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        sockets.push(subscribed(&url, &tokens[index % tokens.len()], MY_VISITS).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = instance.rss_bytes().context("no RSS for the instance")?;
    drop(sockets);
    Ok((before, after))
}
