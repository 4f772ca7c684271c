//! The relay: publishes the event log to NATS JetStream, in log order, each event once in effect.
//!
//! Every instance runs it; one leads at a time, the holder of a session advisory lock on a
//! connection of its own (`DATABASE_DIRECT_URL`: a transaction-pooling proxy would drop a session
//! lock). When the leader dies its connection closes, the lock is freed, and another instance
//! takes over within [`LEADERSHIP_RETRY`]. The leader reads a batch after its checkpoint, publishes
//! every event of it with `Nats-Msg-Id` = event id (pipelined), and advances the checkpoint only
//! once the broker acknowledged them all. From an event not acknowledged on, the batch is sent
//! again with the same ids (a cluster's stream is leaderless for a moment when its leader dies);
//! one that still fails is published again from the checkpoint. The broker drops the copies it already has (within its duplicate window, longer
//! than the relay's longest back-off), and consumers keep an inbox for whatever is older.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::db::Database;
use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
    message::PublishMessage,
    stream,
};
use chrono::{DateTime, Utc};
use sea_orm::sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{
    broker, leader,
    log::{self, Lag, LogPosition, StoredEvent},
    stretch::{PLACE_HEADER, Place},
};

/// The checkpoint's name in `event_checkpoints`.
pub const CHECKPOINT: &str = "relay:nats";
pub const STREAM: &str = "HOME_VISITS";
/// Any fixed number; the same in every instance.
const LEADER_LOCK_KEY: i64 = 0x686f_6d65_7265_6c61;
/// How often a follower tries to become the leader.
const LEADERSHIP_RETRY: Duration = Duration::from_secs(1);
/// How long an idle leader waits before looking at the log again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Short: a try is one read of the log and a publish, and the sooner the relay finds the broker
/// back, the sooner live updates and consumers resume (with 10 s, a cluster back after losing its
/// quorum could wait 10 s more for the relay; the `broker-cluster` scenario missed its deadline so).
const LONGEST_BACKOFF: Duration = Duration::from_secs(2);
/// The broker drops a message whose id it saw this recently; must exceed [`LONGEST_BACKOFF`]
/// plus a publish timeout by a wide margin.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Servers of one NATS cluster.
    pub servers: Vec<String>,
    pub stream_replicas: usize,
    /// A direct (not pooled) connection URL, for the leader lock.
    pub direct_url: SecretString,
    pub batch_size: u64,
}

/// What the relay of this instance is doing, for `/readyz` and the logs.
#[derive(Default)]
pub struct RelayStatus {
    leader: AtomicBool,
    broker_connected: AtomicBool,
    published: AtomicU64,
    resent: AtomicU64,
    duplicates: AtomicU64,
    last_published_at: Mutex<Option<DateTime<Utc>>>,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    /// Whether this instance is the one publishing.
    pub leader: bool,
    pub broker_connected: bool,
    /// Events this instance has published since it started.
    pub published: u64,
    /// Events sent again because they or one before them went unacknowledged (a stream between
    /// leaders).
    pub resent: u64,
    /// Of those, how many the broker already had (sent again after a lost acknowledgement or a
    /// change of stream leader; stored once all the same).
    pub duplicates: u64,
    pub last_published_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// How far the relay (whichever instance leads) is behind the log.
    pub lag: Option<Lag>,
}

impl RelayStatus {
    pub fn report(&self, lag: Option<Lag>) -> RelayReport {
        RelayReport {
            leader: self.leader.load(Ordering::Acquire),
            broker_connected: self.broker_connected.load(Ordering::Acquire),
            published: self.published.load(Ordering::Acquire),
            resent: self.resent.load(Ordering::Acquire),
            duplicates: self.duplicates.load(Ordering::Acquire),
            last_published_at: self.last_published_at.lock().ok().and_then(|at| *at),
            last_error: self.last_error.lock().ok().and_then(|error| error.clone()),
            lag,
        }
    }

    /// Keeps what kind of failure it was for `/readyz` (which anyone may read); the whole message,
    /// with addresses and SQL, goes to the log only.
    fn failed(&self, error: String) {
        let kind = error.split(':').next().unwrap_or_default().to_string();
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(kind);
        }
    }

    fn published(&self, count: usize) {
        self.published.fetch_add(count as u64, Ordering::AcqRel);
        if let Ok(mut at) = self.last_published_at.lock() {
            *at = Some(Utc::now());
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }
}

/// Runs until the task is aborted: follows, leads when it can, publishes while it leads.
pub async fn run(db: Database, settings: RelaySettings, status: Arc<RelayStatus>) {
    let client = match connect_broker(&settings.servers, &status).await {
        Ok(client) => client,
        Err(error) => {
            // Only a malformed NATS_URL gets here (the client retries unreachable servers).
            tracing::error!(%error, "relay disabled: cannot use NATS_URL");
            status.failed(error.to_string());
            return;
        }
    };
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(PUBLISH_TIMEOUT)
        .build(client.clone());
    let options = match settings
        .direct_url
        .expose_secret()
        .parse::<PgConnectOptions>()
    {
        Ok(options) => options,
        Err(error) => {
            tracing::error!(%error, "relay disabled: cannot use the database URL");
            status.failed(error.to_string());
            return;
        }
    };
    let mut candidate =
        leader::Candidate::new(&options, LEADER_LOCK_KEY, "home-visits relay leader");
    loop {
        let Some(leader_connection) = candidate.try_to_lead().await else {
            tokio::time::sleep(LEADERSHIP_RETRY).await;
            continue;
        };
        status.leader.store(true, Ordering::Release);
        tracing::info!("relay: leading, publishing the event log to NATS");
        let outcome = lead(
            &db,
            &client,
            &jetstream,
            &settings,
            &status,
            leader_connection,
        )
        .await;
        status.leader.store(false, Ordering::Release);
        candidate.resign().await;
        tracing::warn!(reason = %outcome, "relay: no longer leading");
        tokio::time::sleep(LEADERSHIP_RETRY).await;
    }
}

async fn connect_broker(
    servers: &[String],
    status: &Arc<RelayStatus>,
) -> anyhow::Result<async_nats::Client> {
    let events_status = status.clone();
    let options = broker::options("home-visits relay").event_callback(move |event| {
        let status = events_status.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    status.broker_connected.store(true, Ordering::Release);
                    tracing::info!("relay: connected to NATS");
                }
                async_nats::Event::Disconnected => {
                    status.broker_connected.store(false, Ordering::Release);
                    tracing::warn!("relay: disconnected from NATS");
                }
                other => tracing::debug!(event = %other, "relay: NATS event"),
            }
        }
    });
    broker::connect(servers, options).await
}

/// Publishes while this instance leads; returns why it stopped.
async fn lead(
    db: &Database,
    client: &async_nats::Client,
    jetstream: &jetstream::Context,
    settings: &RelaySettings,
    status: &RelayStatus,
    leader_connection: &mut PgConnection,
) -> String {
    let mut stream_ready = false;
    let mut checkpoint = None;
    let mut backoff = Duration::from_millis(100);
    let mut last_lag_log = Instant::now();
    loop {
        // The lock lives as long as this connection: if it is gone, so is the leadership.
        // Bounded: a half-open connection would otherwise hang here while the server keeps the lock.
        match tokio::time::timeout(Duration::from_secs(5), leader_connection.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return format!("leader connection lost: {error}"),
            Err(_) => return "leader connection did not answer a ping in 5 s".to_string(),
        }
        let step = async {
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err("NATS is not connected".to_string());
            }
            if !stream_ready {
                ensure_stream(jetstream, settings.stream_replicas).await?;
                stream_ready = true;
            }
            let from = match checkpoint {
                Some(position) => position,
                None => log::checkpoint(db, CHECKPOINT)
                    .await
                    .map_err(|error| format!("reading the checkpoint: {error}"))?,
            };
            checkpoint = Some(from);
            let batch = log::read_after(db, from, settings.batch_size)
                .await
                .map_err(|error| format!("reading the log: {error}"))?;
            let mut batch = batch;
            let Some(last) = batch.last().map(StoredEvent::log_position) else {
                return Ok(0);
            };
            // After taking the checkpoint from the log's order: consumers see each visit in order.
            log::in_aggregate_order(&mut batch);
            publish(jetstream, (from, last), &batch, status).await?;
            log::advance_checkpoint(db, CHECKPOINT, last)
                .await
                .map_err(|error| format!("advancing the checkpoint: {error}"))?;
            checkpoint = Some(last);
            status.published(batch.len());
            Ok(batch.len())
        };
        match step.await {
            Ok(published) => {
                backoff = Duration::from_millis(100);
                // Short of a full batch: let the next one gather instead of publishing a few at a time.
                if (published as u64) < settings.batch_size {
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "relay: publishing failed");
                status.failed(error);
                // Re-read the checkpoint: another leader may have moved it while this one stalled.
                checkpoint = None;
                stream_ready = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LONGEST_BACKOFF);
            }
        }
        if last_lag_log.elapsed() >= Duration::from_secs(10) {
            last_lag_log = Instant::now();
            match log::lag(db, CHECKPOINT).await {
                Ok(lag) if lag.events > 0 => {
                    tracing::info!(events = lag.events, seconds = lag.seconds, "relay lag");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "relay: cannot measure lag"),
            }
        }
    }
}

/// Creates the stream, or brings an existing one to this configuration.
pub async fn ensure_stream(jetstream: &jetstream::Context, replicas: usize) -> Result<(), String> {
    jetstream
        .create_or_update_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["home_visits.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|error| format!("ensuring stream {STREAM}: {error}"))
}

/// How long an event the broker did not acknowledge is sent again, [`RESEND_PAUSE`] apart: in a
/// cluster the stream has no leader to answer for a moment after its leader dies, and async-nats
/// does not retry by itself. Past that, the batch fails and runs again from the checkpoint.
const RESEND_FOR: Duration = Duration::from_secs(3);
const RESEND_PAUSE: Duration = Duration::from_millis(250);

/// Sends the whole batch, then waits for every acknowledgement: one broker round trip per
/// batch, not per event. From the first event not acknowledged on, the rest of the batch is sent
/// again, in order and with the same `Nats-Msg-Id`s, so the broker stores each once whatever
/// happened to the first try (it drops the copies it has). Errs if that does not succeed within
/// [`RESEND_FOR`]. What was sent again and what the broker already had are counted in `status`
/// as it happens, whether the batch succeeds or not.
async fn publish(
    jetstream: &jetstream::Context,
    (from, to): (LogPosition, LogPosition),
    batch: &[StoredEvent],
    status: &RelayStatus,
) -> Result<(), String> {
    let messages = (0..)
        .zip(batch)
        .map(|(index, event)| {
            let body = serde_json::to_vec(event)
                .map_err(|error| format!("serialising event {}: {error}", event.id))?;
            // Where it sits in the log, for the live feed's cursors (see `stretch`).
            let place = Place { from, to, index };
            Ok(PublishMessage::build()
                .payload(body.into())
                .message_id(event.id.to_string())
                .header(PLACE_HEADER, place.to_string().as_str()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut from = 0;
    let mut resending_until: Option<Instant> = None;
    loop {
        let deadline = resending_until.map(tokio::time::Instant::from);
        let (acknowledged, failure) =
            send_and_wait(jetstream, &batch[from..], &messages[from..], deadline).await;
        let duplicates = acknowledged.iter().filter(|ack| ack.duplicate).count();
        status
            .duplicates
            .fetch_add(duplicates as u64, Ordering::AcqRel);
        let Some(error) = failure else {
            return Ok(());
        };
        from += acknowledged.len();
        let event = &batch[from];
        let until = *resending_until.get_or_insert_with(|| Instant::now() + RESEND_FOR);
        if !worth_sending_again(&error) || Instant::now() + RESEND_PAUSE >= until {
            return Err(format!(
                "no acknowledgement for event {}: {error}",
                event.id
            ));
        }
        tracing::debug!(%error, event = %event.id, "relay: sending the rest of the batch again");
        status
            .resent
            .fetch_add((batch.len() - from) as u64, Ordering::AcqRel);
        tokio::time::sleep(RESEND_PAUSE).await;
    }
}

/// Sends `events` in order, then awaits their acknowledgements side by side (each has its own
/// timeout, which starts when it is awaited), at most until `deadline`. Returns the
/// acknowledgements of the leading events the broker stored, and the error of the first it did
/// not, if any.
async fn send_and_wait(
    jetstream: &jetstream::Context,
    events: &[StoredEvent],
    messages: &[PublishMessage],
    deadline: Option<tokio::time::Instant>,
) -> (
    Vec<async_nats::jetstream::publish::PublishAck>,
    Option<PublishError>,
) {
    let mut pending = Vec::with_capacity(events.len());
    let mut send_failure = None;
    for (event, message) in events.iter().zip(messages) {
        match jetstream
            .send_publish(event.subject(), message.clone())
            .await
        {
            Ok(ack) => pending.push(ack.into_future()),
            Err(error) => {
                send_failure = Some(error);
                break;
            }
        }
    }
    let waiting = futures::future::join_all(pending);
    let outcomes = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, waiting).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                return (
                    Vec::new(),
                    Some(PublishError::new(PublishErrorKind::TimedOut)),
                );
            }
        },
        None => waiting.await,
    };
    let mut acknowledged = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(ack) => acknowledged.push(ack),
            Err(error) => return (acknowledged, Some(error)),
        }
    }
    (acknowledged, send_failure)
}

/// Whether the broker may store the event if asked again: yes while the stream is between
/// leaders (no responders, a timeout, a cluster error), never for a message it refuses as such.
fn worth_sending_again(error: &PublishError) -> bool {
    !matches!(
        error.kind(),
        PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
    )
}
