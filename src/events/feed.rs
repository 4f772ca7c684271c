//! The live feed: every event, as soon as it is committed, to whatever on this instance listens
//! (the GraphQL subscriptions). One buffer per instance that every subscriber shares.
//!
//! Without a broker it is fed by the deployment's one reader of the log (`broadcast`), whose
//! notifications carry the events: the database serves that reader alone, however many instances
//! and subscribers there are. Each notification names the stretch of the log it belongs to; one
//! that does not follow on from what this instance handed on last (a listener that reconnected, a
//! new leader) makes the instance read the gap from the log itself, so a lost notification costs
//! latency (at most about a second: the leader announces where the log is every second even when
//! nothing happens) and never an event. With `NATS_URL` set it reads the JetStream stream the relay fills
//! instead. Every event is handed on with its [`Place`], which a subscription's cursor is made of.
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
    broadcast::{Announcement, CHANNEL},
    log::{self, LogPosition, StoredEvent},
    relay,
    stretch::{self, PLACE_HEADER, Place},
};

/// An event as the feed hands it on.
pub struct FeedEvent {
    pub event: StoredEvent,
    pub place: Place,
    /// What the API layer reads the event as (a visit change, say), worked out by the first
    /// subscriber that needs it and shared by the others: every subscriber sees every event.
    pub reading: std::sync::OnceLock<Option<Box<dyn std::any::Any + Send + Sync>>>,
}

impl FeedEvent {
    pub fn new(event: StoredEvent, place: Place) -> Self {
        Self {
            event,
            place,
            reading: std::sync::OnceLock::new(),
        }
    }

    /// The event read as a `T` by `read`, once for all subscribers.
    pub fn read_as<T: Send + Sync + 'static>(
        &self,
        read: impl FnOnce(&StoredEvent) -> Option<T>,
    ) -> Option<&T> {
        self.reading
            .get_or_init(|| {
                read(&self.event).map(|read| Box::new(read) as Box<dyn std::any::Any + Send + Sync>)
            })
            .as_ref()
            .and_then(|reading| reading.downcast_ref())
    }
}

pub type Receiver = broadcast::Receiver<Arc<FeedEvent>>;

pub struct LiveFeed {
    sender: broadcast::Sender<Arc<FeedEvent>>,
    following: AtomicBool,
    /// Whether the feed follows the deployment's reader of the log (no broker): subscribers then
    /// need it anchored in the log, even before its listener has started (the JetStream follower
    /// starts from the stream's end by itself).
    reads_log: bool,
    delivered: AtomicU64,
    /// This instance is the deployment's reader of the log (see `broadcast`, which sets it).
    leading: Arc<AtomicBool>,
    /// Everything up to here was handed on (or came before the feed started); `None` until the
    /// feed is anchored in the log.
    handed_on: std::sync::Mutex<Option<LogPosition>>,
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
    /// The log position handed on, as `txid` and `position` (see `log`).
    pub passed_txid: u64,
    pub passed_position: i64,
    /// Whether the feed is anchored in the PostgreSQL log. Always false when the feed follows
    /// JetStream, which has no anchor of this kind.
    pub reading: bool,
    /// Whether this instance is the deployment's one reader of the log, announcing it to every
    /// instance (without a broker; one instance at a time).
    pub leading: bool,
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
            leading: Arc::default(),
            handed_on: std::sync::Mutex::default(),
        })
    }

    fn handed_on(&self) -> std::sync::MutexGuard<'_, Option<LogPosition>> {
        // Nothing panics while holding it, but a poisoned position is still a valid one.
        self.handed_on
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the feed as it stands. Subscriptions get a [`Held`] place instead (the WebSocket
    /// takes one for every `subscribe`).
    pub fn subscribe(&self) -> Receiver {
        self.sender.subscribe()
    }

    /// A place on the feed that sees every event committed from now on. Only before the feed has
    /// anchored itself in the log (just after start) does this read the log's end, to anchor it.
    pub async fn hold(&self, db: &impl ConnectionTrait) -> Result<Receiver, DbErr> {
        let receiver = self.sender.subscribe();
        if self.reads_log && self.handed_on().is_none() {
            self.anchor_at(log::end(db).await?);
        }
        Ok(receiver)
    }

    /// Anchors the feed at `end` (read just now) unless it already is: whoever anchored first did
    /// so from a reading taken before this, so nothing committed after it is behind the anchor.
    fn anchor_at(&self, end: LogPosition) {
        self.handed_on().get_or_insert(end);
    }

    pub fn report(&self) -> FeedReport {
        let handed_on = *self.handed_on();
        let passed = handed_on.unwrap_or_default();
        FeedReport {
            following: self.following.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            subscribers: self.sender.receiver_count(),
            passed_txid: passed.txid,
            passed_position: passed.position,
            reading: self.reads_log && handed_on.is_some(),
            leading: self.leading.load(Ordering::Relaxed),
        }
    }

    /// The flag the deployment's reader of the log raises while this instance leads.
    pub fn leadership(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }

    fn is_listened_to(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Hands on events of the stretch `(from, to]`, the first of them at index `first`.
    fn publish(&self, from: LogPosition, to: LogPosition, first: u32, events: Vec<StoredEvent>) {
        for (index, event) in (first..).zip(events) {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            let place = Place { from, to, index };
            // No subscriber is not an error: the event is in the log for whoever comes later.
            let _ = self.sender.send(Arc::new(FeedEvent::new(event, place)));
        }
    }
}

/// Follows the deployment's reader of the log (see `broadcast`) until the pool closes.
/// `listen_with`: the connection options of a direct (session-capable) connection, since
/// `LISTEN` outlives transactions. Gaps are read through `reads`.
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
    // Kept across reconnects: a stretch left halfway is finished from the log.
    let mut follower = Follower {
        reads: &reads,
        feed: &feed,
        partial: None,
    };
    loop {
        let listening = match PgListener::connect_with(&listener_pool).await {
            Ok(mut listener) => listener.listen(CHANNEL).await.map(|()| listener),
            Err(error) => Err(error),
        };
        let mut listener = match listening {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "live feed cannot LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if feed.handed_on().is_none() {
            match log::end(&db).await {
                Ok(end) => feed.anchor_at(end),
                Err(error) => tracing::warn!(%error, "live feed cannot find the end of the log"),
            }
        }
        feed.following.store(true, Ordering::Relaxed);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => follower.take(notification.payload()).await,
                // The listener reconnected: whatever it missed shows as a gap.
                Ok(None) => {}
                Err(error) => {
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

struct Follower<'a> {
    reads: &'a Reads,
    feed: &'a LiveFeed,
    /// A stretch coming in several notifications, with the index of the next one expected.
    partial: Option<Place>,
}

impl Follower<'_> {
    async fn take(&mut self, payload: &str) {
        let Some(announcement) = Announcement::parse(payload) else {
            tracing::warn!("live feed: an announcement it cannot read; the next one fills the gap");
            return;
        };
        let Place { from, to, index } = announcement.place;
        // A stretch left halfway (one of its notifications was missed): finished from the log
        // first, so its events keep their places and none is handed on twice.
        if let Some(partial) = self
            .partial
            .filter(|partial| *partial != announcement.place)
        {
            if !self
                .read_from_log(partial.from, partial.to, partial.index)
                .await
            {
                return;
            }
            self.partial = None;
        }
        let handed_on = *self.feed.handed_on();
        let continues = self.partial.take() == Some(announcement.place);
        let in_order = match handed_on {
            _ if continues => true,
            None => true,
            Some(last) if to <= last => return,
            Some(last) => last == from && index == 0,
        };
        if !in_order {
            let Some(last) = handed_on else { return };
            // A gap, or an overlap with what was read: the log has it all.
            self.read_from_log(last, to, 0).await;
            return;
        }
        if !self.feed.is_listened_to() {
            // Nobody to hand it to: only keep up with where the log is. Whoever subscribes from
            // now on wants events committed later, which a later stretch holds.
            *self.feed.handed_on() = Some(to);
            return;
        }
        let Some(events) = announcement.events() else {
            // Not carried (or unreadable): the log has this and the rest of the stretch; read
            // again, the stretch is the same, so the events keep their places.
            if !self.read_from_log(from, to, index).await {
                self.partial = Some(announcement.place);
            }
            return;
        };
        let next = index.saturating_add(u32::try_from(events.len()).unwrap_or(u32::MAX));
        self.feed.publish(from, to, index, events);
        if next >= announcement.total {
            *self.feed.handed_on() = Some(to);
        } else {
            self.partial = Some(Place {
                from,
                to,
                index: next,
            });
        }
    }

    /// Hands on the stretch `(from, to]` as read from the log, from index `first` on (only while
    /// someone listens), and moves past it. `false` if it could not be read: nothing moved, and
    /// the next announcement (the leader sends one every second at least) tries again.
    async fn read_from_log(&mut self, from: LogPosition, to: LogPosition, first: u32) -> bool {
        if self.feed.is_listened_to() {
            let source = self.reads.lag_tolerant().await;
            match stretch::read(source, from, to).await {
                Ok(events) => {
                    let rest = events.into_iter().skip(first as usize).collect();
                    self.feed.publish(from, to, first, rest);
                }
                Err(error) => {
                    tracing::warn!(%error, "live feed cannot read the log");
                    return false;
                }
            }
        }
        *self.feed.handed_on() = Some(to);
        true
    }
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
            let place = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(PLACE_HEADER))
                .and_then(|place| Place::parse(place.as_str()));
            match serde_json::from_slice::<StoredEvent>(&message.payload) {
                Ok(event) => {
                    // The relay says where the event sits; from an older relay, on its own.
                    let place = place.unwrap_or_else(|| Place::alone(event.log_position()));
                    feed.publish(place.from, place.to, place.index, vec![event]);
                }
                Err(error) => tracing::warn!(%error, "live feed skipped an unreadable message"),
            }
        }
        feed.following.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
