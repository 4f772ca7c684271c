//! Remembers, per instance, which sessions were recently seen open, so an authenticated request
//! usually costs no session query. Safe because revocations are broadcast: every revocation
//! commits a `NOTIFY` on [`CHANNEL`], and each instance's listener evicts the session (or the whole
//! cache when its listening connection drops, since notifications may then have been missed).
//! The cache is bypassed whenever the listener is not connected.
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::Caller;

pub const CHANNEL: &str = "home_visits_session_revoked";

/// Even with every notification delivered, an entry is re-checked after this long.
const TIME_TO_LIVE: Duration = Duration::from_secs(60);
/// Bounds memory: past this many live sessions the cache starts over.
const CAPACITY: usize = 100_000;

pub struct SessionCache {
    live: Mutex<HashMap<Uuid, (Uuid, Instant)>>,
    listening: AtomicBool,
    /// Bumped by every eviction, so a database answer that raced a revocation is not cached.
    generation: AtomicU64,
    /// Every eviction, for what holds a session open longer than a request (WebSockets).
    revocations: broadcast::Sender<Revocation>,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            listening: AtomicBool::default(),
            generation: AtomicU64::default(),
            revocations: broadcast::channel(1024).0,
        }
    }
}

impl SessionCache {
    /// Revocations as this instance learns them (from any instance). A receiver that falls behind
    /// gets `Lagged` and must treat it as [`Revocation::Everything`].
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    pub fn is_known_live(&self, caller: Caller) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            return false;
        }
        let Ok(live) = self.live.lock() else {
            return false;
        };
        matches!(live.get(&caller.session_id), Some((user, seen)) if *user == caller.user_id && seen.elapsed() < TIME_TO_LIVE)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a session the database just confirmed open, unless anything was evicted since
    /// `generation` was read (the confirmation may predate that revocation).
    pub fn remember(&self, caller: Caller, generation: u64) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut live) = self.live.lock()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if live.len() >= CAPACITY {
                live.clear();
            }
            live.insert(caller.session_id, (caller.user_id, Instant::now()));
        }
    }

    /// Forgets one session on this instance (others learn it from [`Revocation::announce`]).
    pub fn evict_session(&self, session_id: Uuid) {
        self.evict(Revocation::Session(session_id));
    }

    /// Forgets every session of a user on this instance.
    pub fn evict_user(&self, user_id: Uuid) {
        self.evict(Revocation::User(user_id));
    }

    fn evict(&self, revocation: Revocation) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Nobody listening is fine: no socket is open.
        let _ = self.revocations.send(revocation);
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        match revocation {
            Revocation::Session(id) => {
                live.remove(&id);
            }
            Revocation::User(user) => live.retain(|_, (owner, _)| *owner != user),
            Revocation::Everything => live.clear(),
        }
    }

    fn set_listening(&self, listening: bool) {
        self.evict(Revocation::Everything);
        self.listening.store(listening, Ordering::Release);
    }

    /// Follows revocations from every instance until the pool closes. Spawn it once per instance.
    /// `listen_with`: a direct (session-capable) connection's options: through a transaction
    /// pooler `LISTEN` succeeds and then hears nothing.
    pub async fn follow_revocations(
        &self,
        db: &DatabaseConnection,
        listen_with: sea_orm::sqlx::postgres::PgConnectOptions,
    ) {
        use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
        // A connection of its own, outside the pool: a listener holds its connection for good,
        // and taking it from the pool would leave one fewer for queries.
        let service_pool = db.get_postgres_connection_pool();
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(listen_with);
        loop {
            let mut listener = match PgListener::connect_with(&listener_pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "session revocation listener cannot connect; not caching sessions");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(%error, "cannot LISTEN for session revocations; not caching sessions");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.set_listening(true);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        self.evict(Revocation::from_payload(notification.payload()));
                    }
                    // The connection dropped (and was re-established): revocations may have been missed.
                    Ok(None) => self.evict(Revocation::Everything),
                    Err(error) => {
                        tracing::warn!(%error, "session revocation listener lost; not caching sessions");
                        break;
                    }
                }
            }
            self.set_listening(false);
            if service_pool.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a revocation covers; travels between instances as the `NOTIFY` payload
/// `session:<id>` or `user:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Session(Uuid),
    User(Uuid),
    /// Anything unreadable: forgetting everything is always safe.
    Everything,
}

impl Revocation {
    fn payload(self) -> String {
        match self {
            Self::Session(id) => format!("session:{id}"),
            Self::User(id) => format!("user:{id}"),
            Self::Everything => "all".into(),
        }
    }

    fn from_payload(payload: &str) -> Self {
        let parsed = match payload.split_once(':') {
            Some(("session", id)) => id.parse().ok().map(Self::Session),
            Some(("user", id)) => id.parse().ok().map(Self::User),
            _ => None,
        };
        parsed.unwrap_or(Self::Everything)
    }

    /// Tells every instance; delivered when the surrounding transaction commits.
    pub async fn announce(self, conn: &impl ConnectionTrait) -> Result<(), sea_orm::DbErr> {
        conn.execute_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), self.payload().into()],
        ))
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_survives_its_trip_through_notify() {
        let id = Uuid::new_v4();
        for revocation in [
            Revocation::Session(id),
            Revocation::User(id),
            Revocation::Everything,
        ] {
            assert_eq!(Revocation::from_payload(&revocation.payload()), revocation);
        }
        assert_eq!(
            Revocation::from_payload("session:garbage"),
            Revocation::Everything
        );
    }

    #[test]
    fn evicting_a_user_forgets_only_their_sessions() {
        let cache = SessionCache::default();
        cache.listening.store(true, Ordering::Release);
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let ann_session = Caller {
            user_id: ann,
            session_id: Uuid::new_v4(),
        };
        let bob_session = Caller {
            user_id: bob,
            session_id: Uuid::new_v4(),
        };
        cache.remember(ann_session, cache.generation());
        cache.remember(bob_session, cache.generation());
        cache.evict_user(ann);
        assert!(!cache.is_known_live(ann_session));
        assert!(cache.is_known_live(bob_session));
        cache.evict_session(bob_session.session_id);
        assert!(!cache.is_known_live(bob_session));
    }
}
