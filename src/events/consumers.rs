//! Running a consumer, from either source, and reporting its health.
//!
//! Without a broker a consumer reads the PostgreSQL log: each batch runs under a transaction-level
//! advisory lock named after the consumer, so of many instances one works at a time, and the
//! checkpoint moves in the same transaction. With `NATS_URL` it reads a durable JetStream pull
//! consumer that the instances share (explicit acks; a database failure is nak'ed with a delay).
//! Both hand each event to [`consumer::process`], so the inbox, ordering, retries and dead letters
//! are the same.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::db::Database;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use sea_orm::{ConnectionTrait, DbErr, Statement, TransactionTrait};
use serde::Serialize;

use super::{
    consumer::{self, Handler},
    log::{self, Lag, StoredEvent},
    relay,
};

const IDLE_POLL: Duration = Duration::from_millis(100);
const BATCH: u64 = 200;
/// JetStream redelivers an unacknowledged message after this long (an instance died mid-event).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unlimited: only database failures are nak'ed (handler failures are dead-lettered after
/// [`consumer::ATTEMPTS`] tries and acknowledged), and a message JetStream stopped delivering
/// during a long outage would be lost without a dead letter.
const MAX_DELIVER: i64 = -1;
/// A batch stops taking new events after this long, well inside the lock transaction's
/// `idle_in_transaction_session_timeout`.
const BATCH_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Postgres,
    Jetstream,
}

/// What one consumer on this instance is doing.
pub struct ConsumerStatus {
    pub name: &'static str,
    pub source: Source,
    heartbeat_at: Mutex<Option<DateTime<Utc>>>,
    progress_at: Mutex<Option<DateTime<Utc>>>,
    handled: AtomicU64,
    /// Messages JetStream holds for this consumer (not yet delivered or not yet acknowledged).
    pending: AtomicU64,
}

impl ConsumerStatus {
    pub fn new(name: &'static str, source: Source) -> Arc<Self> {
        Arc::new(Self {
            name,
            source,
            heartbeat_at: Mutex::new(None),
            progress_at: Mutex::new(None),
            handled: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        })
    }

    fn beat(&self) {
        if let Ok(mut at) = self.heartbeat_at.lock() {
            *at = Some(Utc::now());
        }
    }

    fn progressed(&self, handled: usize) {
        self.handled.fetch_add(handled as u64, Ordering::AcqRel);
        if let Ok(mut at) = self.progress_at.lock() {
            *at = Some(Utc::now());
        }
    }
}

/// What the checkpoints of consumers reading the PostgreSQL log are named with.
pub const CHECKPOINT_PREFIX: &str = "consumer:";

/// The checkpoint of a consumer that reads the PostgreSQL log.
pub fn checkpoint_name(consumer: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{consumer}")
}

/// Reads the PostgreSQL log until the task is aborted.
pub async fn run_from_log<H: Handler>(db: Database, handler: H, status: Arc<ConsumerStatus>) {
    loop {
        status.beat();
        match step_from_log(&db, &handler, &status).await {
            // A short batch means the log is nearly drained: wait for more to gather rather than
            // read it a few events at a time (each read is a transaction and a scan).
            Ok(read) if (read as u64) < BATCH => tokio::time::sleep(IDLE_POLL).await,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(consumer = H::NAME, %error, "consumer: reading the log failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One batch, if this instance gets the consumer's lock; returns how many events it read.
pub async fn step_from_log<H: Handler>(
    db: &Database,
    handler: &H,
    status: &ConsumerStatus,
) -> Result<usize, DbErr> {
    let name = checkpoint_name(H::NAME);
    let Some(lock) = take_batch_lock(db, &name).await? else {
        return Ok(0);
    };
    let from = log::checkpoint(&lock, &name).await?;
    let stretch = log::read_wanted_after(&lock, from, BATCH, H::WANTED).await?;
    let Some(end) = stretch.end else {
        lock.commit().await?;
        return Ok(0);
    };
    // Unordered consumers try the whole batch at once first; any refusal sends it down the
    // careful path, event by event.
    let lock = if !H::ORDERED {
        match consumer::handle_batch_unordered(&lock, handler, &stretch.events).await {
            Ok(true) => {
                log::advance_checkpoint(&lock, &name, end).await?;
                lock.commit().await?;
                status.progressed(stretch.len);
                return Ok(stretch.len);
            }
            Ok(false) => {
                lock.rollback().await?;
                match take_batch_lock(db, &name).await? {
                    Some(lock) => lock,
                    None => return Ok(0),
                }
            }
            Err(error) => {
                let _ = lock.rollback().await;
                return Err(error);
            }
        }
    } else {
        lock
    };
    let started = std::time::Instant::now();
    // Past the stretch's end once every wanted event in it is handled; short of it (at the last
    // one handled) when the batch ran out of time.
    let mut reached = Some(end);
    let mut handled = 0;
    for event in &stretch.events {
        if started.elapsed() > BATCH_TIME {
            reached = stretch.events[..handled]
                .last()
                .map(StoredEvent::log_position);
            break;
        }
        // In the batch's transaction, one savepoint per attempt, and one commit for the batch.
        if let Err(error) = consumer::process(&lock, handler, event).await {
            // Everything of this batch rolls back; the next read starts from the same checkpoint.
            let _ = lock.rollback().await;
            return Err(error);
        }
        handled += 1;
    }
    let count = if handled == stretch.events.len() {
        stretch.len
    } else {
        handled
    };
    if let Some(reached) = reached {
        log::advance_checkpoint(&lock, &name, reached).await?;
    }
    lock.commit().await?;
    status.progressed(count);
    Ok(count)
}

/// The batch transaction holding the consumer's lock, or `None` if another instance holds it.
async fn take_batch_lock(
    db: &Database,
    name: &str,
) -> Result<Option<sea_orm::DatabaseTransaction>, DbErr> {
    let lock = db.begin().await?;
    let row = lock
        .query_one_raw(Statement::from_sql_and_values(
            lock.get_database_backend(),
            "SELECT pg_try_advisory_xact_lock(hashtext($1)::bigint) AS mine",
            [name.into()],
        ))
        .await?;
    let mine: bool = match row {
        Some(row) => row.try_get("", "mine")?,
        None => false,
    };
    if mine {
        Ok(Some(lock))
    } else {
        // Another instance runs this consumer now.
        lock.commit().await?;
        Ok(None)
    }
}

/// Reads the consumer's durable JetStream consumer until the task is aborted.
pub async fn run_from_jetstream<H: Handler>(
    db: Database,
    client: async_nats::Client,
    replicas: usize,
    handler: H,
    status: Arc<ConsumerStatus>,
) {
    let jetstream = jetstream::new(client);
    loop {
        status.beat();
        if let Err(error) = consume(&db, &jetstream, replicas, &handler, &status).await {
            tracing::warn!(consumer = H::NAME, %error, "consumer: JetStream read failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume<H: Handler>(
    db: &Database,
    jetstream: &jetstream::Context,
    replicas: usize,
    handler: &H,
    status: &ConsumerStatus,
) -> anyhow::Result<()> {
    relay::ensure_stream(jetstream, replicas)
        .await
        .map_err(anyhow::Error::msg)?;
    let stream = jetstream.get_stream(relay::STREAM).await?;
    let durable = stream
        .get_or_create_consumer(
            H::NAME,
            pull::Config {
                durable_name: Some(H::NAME.to_string()),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: MAX_DELIVER,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = durable.messages().await?;
    let mut every_few_seconds = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(first) = message else { return Ok(()) };
                // Whatever else has already arrived goes with it, as one batch.
                let mut batch = vec![first?];
                while batch.len() < BATCH as usize {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(error))) => return Err(error.into()),
                        Some(None) | None => break,
                    }
                }
                status.beat();
                let handled = handle_messages(db, handler, batch).await?;
                status.progressed(handled);
            }
            _ = every_few_seconds.tick() => {
                status.beat();
                if let Ok(info) = durable.get_info().await {
                    let pending = info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0);
                    status.pending.store(pending, Ordering::Release);
                }
            }
        }
    }
}

/// Handles a batch of JetStream messages and acknowledges each. An unordered consumer tries the
/// whole batch in one transaction first (the log's fast path: one inbox statement, the handler's
/// batch method, one commit, then the acks), which is what keeps it level with a completion burst;
/// any refusal or failure sends the batch down the careful path, message by message.
async fn handle_messages<H: Handler>(
    db: &Database,
    handler: &H,
    messages: Vec<jetstream::Message>,
) -> anyhow::Result<usize> {
    let count = messages.len();
    let mut readable = Vec::with_capacity(count);
    let mut events = Vec::with_capacity(count);
    for message in messages {
        match serde_json::from_slice::<StoredEvent>(&message.payload) {
            Ok(event) => {
                readable.push(message);
                events.push(event);
            }
            Err(error) => {
                // Not even an envelope: nothing a retry could fix.
                tracing::error!(consumer = H::NAME, %error, "consumer: unreadable message terminated");
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
            }
        }
    }
    if !H::ORDERED && events.len() > 1 && batch_at_once(db, handler, &events).await {
        for message in readable {
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        return Ok(count);
    }
    for (message, event) in readable.into_iter().zip(events) {
        let ack = match consumer::process(db, handler, &event).await {
            Ok(_) => AckKind::Ack,
            Err(error) => {
                tracing::warn!(consumer = H::NAME, %error, "consumer: will retry the event");
                let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
                let delay = Duration::from_secs(u64::try_from(delivered.clamp(1, 30)).unwrap_or(1));
                AckKind::Nak(Some(delay))
            }
        };
        message
            .ack_with(ack)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    Ok(count)
}

/// The fast path for a batch from JetStream; `false` when it took nothing (rolled back).
async fn batch_at_once<H: Handler>(db: &Database, handler: &H, events: &[StoredEvent]) -> bool {
    let Ok(txn) = db.begin().await else {
        return false;
    };
    match consumer::handle_batch_unordered(&txn, handler, events).await {
        Ok(true) => txn.commit().await.is_ok(),
        Ok(false) | Err(_) => {
            let _ = txn.rollback().await;
            false
        }
    }
}

/// A consumer's health as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerHealth {
    pub name: &'static str,
    pub source: Source,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub last_progress_at: Option<DateTime<Utc>>,
    pub handled: u64,
    pub lag: Lag,
    pub dead_letters: u64,
    /// Events wait and the consumer has moved on none of them for longer than the threshold.
    pub stalled: bool,
}

pub async fn health(
    db: &impl ConnectionTrait,
    status: &ConsumerStatus,
    stall_after: Duration,
) -> Result<ConsumerHealth, DbErr> {
    let stall_after = chrono::Duration::from_std(stall_after).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let local_progress = status.progress_at.lock().ok().and_then(|at| *at);
    let (lag, progress_at) = match status.source {
        // Progress is the log checkpoint's, whichever instance moved it.
        Source::Postgres => {
            let name = checkpoint_name(status.name);
            (
                log::lag(db, &name).await?,
                log::checkpoint_moved_at(db, &name).await?,
            )
        }
        Source::Jetstream => {
            let pending = status.pending.load(Ordering::Acquire);
            let waited = match (pending, local_progress) {
                (0, _) => 0.0,
                (_, Some(at)) => (now - at).num_milliseconds() as f64 / 1000.0,
                (_, None) => f64::INFINITY,
            };
            (
                Lag {
                    events: pending,
                    seconds: waited,
                },
                local_progress,
            )
        }
    };
    let idle_too_long = progress_at.is_none_or(|at| now - at > stall_after);
    let waiting_too_long = lag.seconds > stall_after.num_milliseconds() as f64 / 1000.0;
    Ok(ConsumerHealth {
        name: status.name,
        source: status.source,
        heartbeat_at: status.heartbeat_at.lock().ok().and_then(|at| *at),
        last_progress_at: progress_at,
        handled: status.handled.load(Ordering::Acquire),
        lag,
        dead_letters: consumer::dead_letter_count(db, status.name).await?,
        stalled: lag.events > 0 && waiting_too_long && idle_too_long,
    })
}
