//! The live feed: every event, as soon as it is committed, to whatever on this instance listens
//! (the GraphQL subscriptions). One reader per instance feeds one broadcast buffer that every
//! subscriber shares, so the cost of the database side does not grow with the subscribers.
//!
//! Without a broker the reader follows the PostgreSQL log: the outbox's insert statement sends a
//! `NOTIFY` on [`CHANNEL`] (delivered at commit; at most one writer every few milliseconds per
//! instance sends it, see `outbox`) and the reader, woken by it, reads the log from where it got
//! to, then reads again a few times shortly after. The notification is only a wake-up: a lost one,
//! or a listener that had to reconnect, costs latency and never an event, since every read starts
//! at the last position (and a slow poll runs anyway). With `NATS_URL` set it reads the JetStream stream the relay
//! fills instead, so the database sees no reader per instance.
//!
//! The feed is for what happens from now on (a client catches up on the past with queries), and
//! reads nothing while nobody on the instance listens: with no subscriber it forgets where it was,
//! and the first one to come finds the end of the log before it is confirmed ([`LiveFeed::hold`]).
//! Keeping up with the end while idle cost PostgreSQL more than the bookings did (a probe on every
//! wake-up: 680 µs of its CPU per `requestVisit`, measured by the bench's split by session).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::db::{Database, replica::Reads};
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbErr};
use serde::Serialize;
use tokio::sync::broadcast;

use super::{
    log::{self, LogPosition, StoredEvent},
    relay,
};

/// The `NOTIFY` channel the outbox wakes readers on.
pub const CHANNEL: &str = "home_visits_outbox";

/// Reads this many events at a time when catching up.
const BATCH: u64 = 500;
/// Reads the log this often even without a wake-up: a safety net, not the path events take.
const SAFETY_POLL: Duration = Duration::from_secs(2);
/// After a wake-up the feed reads again this often until [`TRAILING_READS`] reads in a row found
/// nothing: writers notify at most every [`super::outbox::NOTIFY_SPACING`], so the commits in
/// between are found by these reads; so are events held back behind an older transaction still
/// running (the log shows nothing past it until it ends).
const TRAILING_READ: Duration = Duration::from_millis(20);
const TRAILING_READS: u32 = 3;

pub type Receiver = broadcast::Receiver<Arc<StoredEvent>>;

pub struct LiveFeed {
    sender: broadcast::Sender<Arc<StoredEvent>>,
    following: AtomicBool,
    /// Whether the feed follows the PostgreSQL log (no broker): subscribers then need it anchored
    /// in the log, even before the reader has started (the JetStream follower starts from the
    /// stream's end by itself).
    reads_log: bool,
    delivered: AtomicU64,
    /// Taken around every change of the subscriber count that matters (a first subscriber, the
    /// reader finding none), so the two never disagree on whether the feed is anchored.
    cursor: std::sync::Mutex<Cursor>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// Where the reader goes on from; `None` while nobody listens.
    anchor: Option<LogPosition>,
    /// The last position handed on (for `/readyz`; kept while idle).
    passed: LogPosition,
}

/// A place on the feed taken by [`LiveFeed::hold`] for one subscription, handed to it in the
/// request's data: the subscription reads from that very receiver, so what it sees does not depend
/// on when its resolver first runs.
pub struct Held(std::sync::Mutex<Option<Receiver>>);

impl Held {
    pub fn new(receiver: Receiver) -> Self {
        Self(std::sync::Mutex::new(Some(receiver)))
    }

    pub fn take(&self) -> Option<Receiver> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What `/readyz` shows of the feed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedReport {
    pub following: bool,
    pub delivered: u64,
    pub subscribers: usize,
    /// The log position passed, as `txid` and `position` (see `log`).
    pub passed_txid: u64,
    pub passed_position: i64,
    /// Whether the feed is reading the PostgreSQL log (someone listens); when not, a new
    /// subscriber starts at the end of the log, whatever `passed` says. Always false when the
    /// feed follows JetStream, which has no anchor of this kind.
    pub reading: bool,
}

impl LiveFeed {
    /// `buffer`: how many events a subscriber may fall behind by before it is cut off;
    /// `reads_log`: it will be fed by [`follow_log`].
    pub fn new(buffer: usize, reads_log: bool) -> Arc<Self> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Arc::new(Self {
            sender,
            following: AtomicBool::new(false),
            reads_log,
            delivered: AtomicU64::new(0),
            cursor: std::sync::Mutex::default(),
        })
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        // Nothing panics while holding it, but a poisoned cursor is still a valid one.
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the feed as it stands. Subscriptions get a [`Held`] place instead (the WebSocket
    /// takes one for every `subscribe`); without one, a first subscriber waits for the reader to
    /// anchor itself and may miss what committed meanwhile.
    pub fn subscribe(&self) -> Receiver {
        let _cursor = self.cursor();
        self.sender.subscribe()
    }

    /// A place on the feed that sees every event committed from now on: if nobody listened, the
    /// end of the log is read first. While it is kept the reader stays anchored, so a subscriber
    /// that joins meanwhile through [`subscribe`](Self::subscribe) is anchored too.
    pub async fn hold(&self, db: &impl ConnectionTrait) -> Result<Receiver, DbErr> {
        let receiver = {
            let cursor = self.cursor();
            let receiver = self.sender.subscribe();
            if cursor.anchor.is_some() || !self.reads_log {
                return Ok(receiver);
            }
            receiver
        };
        self.anchor_at(log::end(db).await?);
        Ok(receiver)
    }

    /// Anchors the reader at `end` (read just now) unless it already is: whoever anchored first
    /// did so from a reading taken before this, so nothing committed after it is behind the
    /// anchor (a later transaction gets a higher txid). Everything up to it counts as passed.
    fn anchor_at(&self, end: LogPosition) -> LogPosition {
        let mut cursor = self.cursor();
        let anchor = *cursor.anchor.get_or_insert(end);
        cursor.passed = cursor.passed.max(anchor);
        anchor
    }

    pub fn report(&self) -> FeedReport {
        let cursor = *self.cursor();
        FeedReport {
            following: self.following.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            subscribers: self.sender.receiver_count(),
            passed_txid: cursor.passed.txid,
            passed_position: cursor.passed.position,
            reading: cursor.anchor.is_some(),
        }
    }

    /// Hands what was read together to every subscriber, each aggregate's events in version
    /// order (see [`log::in_aggregate_order`]; the relay orders its batches the same way).
    fn publish(&self, mut events: Vec<StoredEvent>) {
        log::in_aggregate_order(&mut events);
        for event in events {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            // No subscriber is not an error: the event is in the log for whoever comes later.
            let _ = self.sender.send(Arc::new(event));
        }
    }
}

/// Follows the PostgreSQL log until the pool closes. `listen_with`: the connection options of a
/// direct (session-capable) connection, since `LISTEN` outlives transactions.
pub async fn follow_log(
    db: Database,
    reads: Reads,
    listen_with: sea_orm::sqlx::postgres::PgConnectOptions,
    feed: Arc<LiveFeed>,
) {
    use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(listen_with);
    loop {
        let mut listener = match PgListener::connect_with(&listener_pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "live feed cannot connect its listener; polling");
                catch_up(&db, &reads, &feed).await;
                tokio::time::sleep(SAFETY_POLL).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(%error, "live feed cannot LISTEN; polling");
            catch_up(&db, &reads, &feed).await;
            tokio::time::sleep(SAFETY_POLL).await;
            continue;
        }
        feed.following.store(true, Ordering::Relaxed);
        // Whatever committed while the listener was away.
        catch_up(&db, &reads, &feed).await;
        let mut trailing_reads = 0_u32;
        loop {
            let wait = if trailing_reads > 0 {
                TRAILING_READ
            } else {
                SAFETY_POLL
            };
            match tokio::time::timeout(wait, listener.try_recv()).await {
                Ok(Ok(Some(_))) => {
                    // One read answers every wake-up queued so far.
                    while listener.next_buffered().is_some() {}
                    catch_up(&db, &reads, &feed).await;
                    trailing_reads = TRAILING_READS;
                }
                // A trailing read, the safety poll, or a reconnected listener (which may have
                // missed wake-ups).
                Ok(Ok(None)) | Err(_) => {
                    trailing_reads = match catch_up(&db, &reads, &feed).await {
                        CatchUp::Read(0) => trailing_reads.saturating_sub(1),
                        CatchUp::Read(_) => TRAILING_READS,
                        CatchUp::Skipped | CatchUp::Failed => 0,
                    };
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "live feed listener lost; reconnecting");
                    break;
                }
            }
        }
        feed.following.store(false, Ordering::Relaxed);
        if db.pool().is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one catch-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    /// Published this many events (0: nothing was readable yet).
    Read(u64),
    /// Nobody subscribed: nothing read.
    Skipped,
    Failed,
}

/// Reads and publishes everything readable after the anchor. With nobody subscribed it reads
/// nothing and drops the anchor: whoever comes next starts at the end of the log.
/// The log is read where `reads` says (the replica once it has replayed past where the primary
/// stood when this catch-up began, so it holds everything the wake-up was about); the anchor, on
/// the primary.
async fn catch_up(db: &Database, reads: &Reads, feed: &LiveFeed) -> CatchUp {
    let anchor = {
        let mut cursor = feed.cursor();
        if feed.sender.receiver_count() == 0 {
            cursor.anchor = None;
            return CatchUp::Skipped;
        }
        cursor.anchor
    };
    let mut after = match anchor {
        Some(anchor) => anchor,
        // Joined without a hold: anchor here, as a hold would have.
        None => match log::end(db).await {
            Ok(end) => feed.anchor_at(end),
            Err(error) => {
                tracing::warn!(%error, "live feed cannot find the end of the log");
                return CatchUp::Failed;
            }
        },
    };
    // Everything readable now is handed on at once, so a visit's events that straddle two reads
    // are still put in order.
    let source = reads.lag_tolerant().await;
    let mut readable = Vec::new();
    let outcome = loop {
        match log::read_after(source, after, BATCH).await {
            Ok(events) => {
                let read = events.len() as u64;
                if let Some(last) = events.last() {
                    after = last.log_position();
                }
                readable.extend(events);
                if read < BATCH {
                    break CatchUp::Read(readable.len() as u64);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "live feed cannot read the log");
                break CatchUp::Failed;
            }
        }
    };
    if !readable.is_empty() {
        feed.publish(readable);
        let mut cursor = feed.cursor();
        // Only this reader moves an anchor it found set, and it only drops one with nobody
        // listening; a subscriber who came meanwhile gets the next read from here.
        cursor.anchor = Some(after);
        cursor.passed = after;
    }
    outcome
}

/// Follows the relay's JetStream stream with an ordered consumer of this instance's own (nothing
/// to share or acknowledge: every instance wants every event). After a failure it resumes just
/// after the last message it saw.
pub async fn follow_jetstream(client: async_nats::Client, replicas: usize, feed: Arc<LiveFeed>) {
    let jetstream = jetstream::new(client);
    let mut resume_after: Option<u64> = None;
    loop {
        if let Err(error) = relay::ensure_stream(&jetstream, replicas).await {
            tracing::warn!(%error, "live feed: no stream yet");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let consumer = jetstream
            .get_stream(relay::STREAM)
            .await
            .map_err(|error| error.to_string());
        // The first start is "from now": pinned to a sequence at once, so a consumer that fails
        // before its first message resumes there instead of skipping what came in between.
        if resume_after.is_none()
            && let Ok(stream) = &consumer
        {
            resume_after = Some(stream.cached_info().state.last_sequence);
        }
        let deliver_policy = match resume_after {
            Some(sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
            None => DeliverPolicy::New,
        };
        let messages = match consumer {
            Ok(stream) => match stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy,
                    ..Default::default()
                })
                .await
            {
                Ok(consumer) => consumer.messages().await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(error),
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "live feed cannot follow the stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        feed.following.store(true, Ordering::Relaxed);
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "live feed lost the stream; resuming");
                    break;
                }
            };
            if let Ok(info) = message.info() {
                resume_after = Some(info.stream_sequence);
            }
            match serde_json::from_slice::<StoredEvent>(&message.payload) {
                Ok(event) => feed.publish(vec![event]),
                Err(error) => tracing::warn!(%error, "live feed skipped an unreadable message"),
            }
        }
        feed.following.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
