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
    count: usize,
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
            count,
            measured,
            stop,
            thread,
        })
    }

    /// How many subscribers there are.
    pub fn count(&self) -> usize {
        self.count
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

/// What idle subscriptions cost: each instance's resident memory before and after, and the
/// service's connections to PostgreSQL before and after.
pub struct IdleCost {
    pub count: usize,
    /// Per instance: its URL, how many it held, RSS before and after (bytes).
    pub instances: Vec<(String, usize, u64, u64)>,
    pub connections: (i64, i64),
}

impl IdleCost {
    /// `idle subscriptions: N over K instances, X KB each (...)`: testers' scripts read it.
    pub fn line(&self) -> String {
        let added: u64 = self
            .instances
            .iter()
            .map(|(_, _, before, after)| after.saturating_sub(*before))
            .sum();
        let each_kb = added as f64 / 1024.0 / self.count.max(1) as f64;
        let per_instance: Vec<String> = self
            .instances
            .iter()
            .map(|(url, held, before, after)| {
                format!(
                    "{url} {held} sockets, RSS {:.1} -> {:.1} MB",
                    *before as f64 / 1_048_576.0,
                    *after as f64 / 1_048_576.0
                )
            })
            .collect();
        format!(
            "idle subscriptions: {} over {} instances, {each_kb:.2} KB each ({}); the service's \
             PostgreSQL connections {} -> {}",
            self.count,
            self.instances.len(),
            per_instance.join("; "),
            self.connections.0,
            self.connections.1
        )
    }
}

/// Sockets per local address towards one server port: under the ~28,000 ephemeral ports an
/// address has.
const SOCKETS_PER_SOURCE: usize = 20_000;
/// Sockets being opened at once.
const OPENING_AT_ONCE: usize = 128;

/// Opens `count` idle sockets with one subscription each, spread over the instances (and over
/// local addresses 127.0.0.1, .2, ... when one runs out of ports), and measures what they cost.
/// Each socket's reader only answers the server's pings.
pub async fn idle_cost(
    instances: &[SpawnedInstance],
    db: &sea_orm::DatabaseConnection,
    tokens: &[String],
    count: usize,
) -> anyhow::Result<IdleCost> {
    use futures::StreamExt;
    let connections_before = service_connections(db).await?;
    let before: Vec<u64> = instances
        .iter()
        .map(|instance| instance.rss_bytes().context("no RSS for an instance"))
        .collect::<anyhow::Result<_>>()?;
    let urls: Vec<String> = instances.iter().map(SpawnedInstance::url).collect();
    let opened: Vec<anyhow::Result<tokio::task::JoinHandle<()>>> = futures::stream::iter(0..count)
        .map(|index| {
            let url = urls[index % urls.len()].clone();
            let token = tokens[index % tokens.len()].clone();
            let nth_on_instance = index / urls.len();
            let source = std::net::Ipv4Addr::new(
                127,
                0,
                0,
                1 + u8::try_from(nth_on_instance / SOCKETS_PER_SOURCE).unwrap_or(u8::MAX - 1),
            );
            async move {
                let mut socket = LiveClient::connect_lean(&url, &token, source.into()).await?;
                socket
                    .subscribe_confirmed("idle", MY_VISITS, json!({}))
                    .await?;
                Ok(tokio::spawn(async move {
                    while socket.next(Duration::from_secs(3600)).await.is_some() {}
                }))
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let mut readers = Vec::with_capacity(count);
    let mut failed = None;
    for reader in opened {
        match reader {
            Ok(reader) => readers.push(reader),
            Err(error) => failed = Some(error),
        }
    }
    if let Some(error) = failed {
        readers.iter().for_each(tokio::task::JoinHandle::abort);
        return Err(error.context(format!(
            "{} of {count} idle subscriptions opened",
            readers.len()
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<u64> = instances
        .iter()
        .map(|instance| instance.rss_bytes().context("no RSS for an instance"))
        .collect::<anyhow::Result<_>>()?;
    let connections_after = service_connections(db).await?;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(IdleCost {
        count,
        instances: urls
            .into_iter()
            .enumerate()
            .map(|(index, url)| {
                let held = count / instances.len() + usize::from(index < count % instances.len());
                (url, held, before[index], after[index])
            })
            .collect(),
        connections: (connections_before, connections_after),
    })
}

async fn service_connections(db: &sea_orm::DatabaseConnection) -> anyhow::Result<i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS connections FROM pg_stat_activity \
             WHERE application_name LIKE 'home-visits%'",
        ))
        .await?
        .context("no row")?;
    Ok(row.try_get("", "connections")?)
}

/// Synthetic `visit.requested` events, written straight into the outbox as if another writer had
/// committed them, `count` per transaction: every `openVisits` subscriber gets each (a member
/// nobody is, a date ahead). They reach no visit, balance or notification, so the books are
/// untouched; what the instances spend on them is the live feed and the deliveries alone.
pub async fn commit_synthetic_requests(
    db: &sea_orm::DatabaseConnection,
    count: u32,
) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Statement};
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
         SELECT gen_random_uuid(), 'visit.requested', 1, 'visit', visit, 1, jsonb_build_object(\
           'visitId', visit, 'memberId', gen_random_uuid(), 'palId', NULL, \
           'date', (current_date + 1)::text, 'minutes', 30, 'status', 'REQUESTED', 'taskCount', 1) \
         FROM (SELECT gen_random_uuid() AS visit FROM generate_series(1, $1)) AS synthetic",
        [i64::from(count).into()],
    ))
    .await?;
    Ok(())
}
