//! Which sessions were revoked lately, known to every instance without a query per request.
//! Every revocation commits a `NOTIFY` on [`CHANNEL`]; each instance's listener adds it to a set
//! of revoked sessions (and of departed users), which is loaded from the database once the
//! listener is up and again after it reconnects (notifications may have been missed meanwhile).
//! A session is only kept in the set for as long as one of its access tokens can still be valid
//! (the access token lifetime and the verifier's leeway, counted from the revocation: no token is
//! issued for a revoked session, and tokens minted for longer are refused), so the set stays the
//! size of one token lifetime's logouts. While the listener is not connected and loaded, every
//! request asks the database instead.
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::db::Database;
use sea_orm::{ConnectionTrait, Statement};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::Caller;

pub const CHANNEL: &str = "home_visits_session_revoked";

pub struct RevokedSessions {
    revoked: Mutex<Revoked>,
    /// True only while the listener is connected and the set was loaded after it connected.
    current: AtomicBool,
    /// How long a revocation matters: the longest an access token lives, and some.
    remember_for: Duration,
    /// Every revocation, for what holds a session open longer than a request (WebSockets).
    revocations: broadcast::Sender<Revocation>,
}

#[derive(Default)]
struct Revoked {
    sessions: HashMap<Uuid, Instant>,
    users: HashMap<Uuid, Instant>,
}

impl Revoked {
    /// Forgets revocations whose every token has expired.
    fn forget_before(&mut self, now: Instant) {
        self.sessions.retain(|_, until| *until > now);
        self.users.retain(|_, until| *until > now);
    }
}

impl RevokedSessions {
    /// `token_lifetime`: the longest an access token this service accepts can live.
    pub fn new(token_lifetime: Duration) -> Self {
        Self {
            revoked: Mutex::default(),
            current: AtomicBool::default(),
            // Leeway of the verifier, and a margin for clocks between instances.
            remember_for: token_lifetime + Duration::from_secs(5 + 30),
            revocations: broadcast::channel(1024).0,
        }
    }

    /// Revocations as this instance learns them (from any instance). A receiver that falls behind
    /// gets `Lagged` and must treat it as [`Revocation::Everything`].
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// `Some(open)` when this instance knows without asking (the listener is current): the session
    /// is open unless it (or its user) is in the revoked set. `None`: ask the database.
    pub fn knows(&self, caller: Caller) -> Option<bool> {
        if !self.current.load(Ordering::Acquire) {
            return None;
        }
        let revoked = self.revoked.lock().ok()?;
        Some(
            !revoked.sessions.contains_key(&caller.session_id)
                && !revoked.users.contains_key(&caller.user_id.0),
        )
    }

    /// Refuses one session on this instance at once (others learn it from
    /// [`Revocation::announce`]).
    pub fn evict_session(&self, session_id: Uuid) {
        self.learn(Revocation::Session(session_id));
    }

    /// Refuses every session of a user on this instance at once.
    pub fn evict_user(&self, user_id: Uuid) {
        self.learn(Revocation::User(user_id));
    }

    fn learn(&self, revocation: Revocation) {
        if revocation == Revocation::Everything {
            // Something was missed or unreadable: ask the database until the set is reloaded.
            self.current.store(false, Ordering::Release);
        } else if let Ok(mut revoked) = self.revoked.lock() {
            let now = Instant::now();
            let until = now + self.remember_for;
            revoked.forget_before(now);
            match revocation {
                Revocation::Session(id) => revoked.sessions.insert(id, until),
                Revocation::User(id) => revoked.users.insert(id, until),
                Revocation::Everything => None,
            };
        }
        // Nobody listening is fine: no socket is open.
        let _ = self.revocations.send(revocation);
    }

    /// Replaces the set with the sessions revoked within the last token lifetime, as the
    /// database has them.
    async fn reload(&self, db: &Database) -> Result<(), sea_orm::DbErr> {
        let seconds = self.remember_for.as_secs_f64();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT id, EXTRACT(EPOCH FROM (now() - revoked_at))::float8 AS age FROM sessions \
                 WHERE revoked_at > now() - make_interval(secs => $1)",
                [seconds.into()],
            ))
            .await?;
        let now = Instant::now();
        let mut loaded = Revoked::default();
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let age = Duration::from_secs_f64(row.try_get::<f64>("", "age")?.max(0.0));
            loaded
                .sessions
                .insert(id, now + self.remember_for.saturating_sub(age));
        }
        if let Ok(mut revoked) = self.revoked.lock() {
            // Revocations heard while loading are newer than the load's snapshot or in it.
            for (id, until) in revoked.users.drain() {
                loaded.users.insert(id, until);
            }
            for (id, until) in revoked.sessions.drain() {
                loaded.sessions.entry(id).or_insert(until);
            }
            *revoked = loaded;
        }
        Ok(())
    }

    /// Follows revocations from every instance until the pool closes. Spawn it once per instance.
    /// `listen_with`: a direct (session-capable) connection's options: through a transaction
    /// pooler `LISTEN` succeeds and then hears nothing.
    pub async fn follow_revocations(
        &self,
        db: &Database,
        listen_with: sea_orm::sqlx::postgres::PgConnectOptions,
    ) {
        use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
        // A connection of its own, outside the pool: a listener holds its connection for good,
        // and taking it from the pool would leave one fewer for queries.
        let service_pool = db.pool();
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            // While it cannot connect, requests ask the database; say so soon and retry.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(listen_with);
        loop {
            let mut listener = match PgListener::connect_with(&listener_pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "session revocation listener cannot connect; asking the database per request");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(%error, "cannot LISTEN for session revocations; asking the database per request");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // A lost connection must show as one at once, not after sqlx reconnected behind our
            // back (what was sent meanwhile would be lost while the set still looked current).
            listener.eager_reconnect(false);
            // Listening first, then loading: a revocation is either in the load or heard after.
            if self.reload_or_wait(db).await {
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            self.learn(Revocation::from_payload(notification.payload()));
                            if !self.current.load(Ordering::Acquire)
                                && !self.reload_or_wait(db).await
                            {
                                break;
                            }
                        }
                        // The connection dropped: start over (connect, LISTEN, reload).
                        Ok(None) => {
                            tracing::warn!(
                                "session revocation listener lost; asking the database per request"
                            );
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "session revocation listener lost; asking the database per request");
                            break;
                        }
                    }
                }
            }
            self.current.store(false, Ordering::Release);
            let _ = self.revocations.send(Revocation::Everything);
            if service_pool.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Loads the set and marks it current; `false` (logged) if the database would not answer.
    async fn reload_or_wait(&self, db: &Database) -> bool {
        match self.reload(db).await {
            Ok(()) => {
                self.current.store(true, Ordering::Release);
                // Sockets re-check their sessions against what the load brought in.
                let _ = self.revocations.send(Revocation::Everything);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot load revoked sessions; asking the database per request");
                self.current.store(false, Ordering::Release);
                false
            }
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
    use crate::domain::UserId;

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
    fn a_revoked_session_or_user_is_refused_and_others_are_not_asked_about() {
        let cache = RevokedSessions::new(Duration::from_secs(900));
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let ann_session = Caller {
            user_id: UserId(ann),
            session_id: Uuid::new_v4(),
        };
        let bob_session = Caller {
            user_id: UserId(bob),
            session_id: Uuid::new_v4(),
        };
        assert_eq!(
            cache.knows(ann_session),
            None,
            "not current: ask the database"
        );
        cache.current.store(true, Ordering::Release);
        assert_eq!(cache.knows(ann_session), Some(true));
        cache.evict_user(ann);
        assert_eq!(cache.knows(ann_session), Some(false));
        assert_eq!(cache.knows(bob_session), Some(true));
        cache.evict_session(bob_session.session_id);
        assert_eq!(cache.knows(bob_session), Some(false));
        cache.learn(Revocation::Everything);
        assert_eq!(cache.knows(bob_session), None, "something was missed: ask");
    }

    #[test]
    fn revocations_are_forgotten_once_no_token_of_theirs_can_be_valid() {
        let mut revoked = Revoked::default();
        let now = Instant::now();
        revoked.sessions.insert(Uuid::new_v4(), now);
        revoked
            .users
            .insert(Uuid::new_v4(), now + Duration::from_secs(1));
        revoked.forget_before(now);
        assert!(revoked.sessions.is_empty());
        assert_eq!(revoked.users.len(), 1);
    }
}
