//! What one instance shares across requests and background tasks, wired once at start-up.
use std::sync::Arc;

use crate::db::Database;
use tokio::sync::watch;

use crate::{
    config::Config,
    db,
    events::{
        consumers::{ConsumerStatus, Source},
        feed::LiveFeed,
        relay::RelayStatus,
    },
    identity::Identity,
    metrics::Metrics,
    notifications::NotificationsHandler,
};

/// Services shared by every request of one instance.
pub struct AppState {
    pub db: Database,
    /// Where lag-tolerant reads run (the replica of `DATABASE_READ_URL` when it has caught up).
    pub reads: db::replica::Reads,
    pub config: Config,
    pub identity: Identity,
    /// What this instance counts for `/metrics`.
    pub metrics: Metrics,
    /// What this instance's relay is doing (idle when no broker is configured).
    pub relay: Arc<RelayStatus>,
    /// The notifications consumer, when this instance runs it (`CONSUMERS`).
    pub notifications: Option<Arc<ConsumerStatus>>,
    /// Every committed event as it commits, for this instance's subscriptions.
    pub live: Arc<LiveFeed>,
    /// Set once the instance starts shutting down, so long-lived work (sockets) can end cleanly.
    pub shutdown: watch::Sender<bool>,
}

impl AppState {
    pub fn new(
        config: Config,
        db: Database,
        replica: Option<(Database, Arc<db::replica::ReplicaWatch>)>,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::new();
        let source = if !config.events.has_broker() {
            Source::Postgres
        } else {
            Source::Jetstream
        };
        let notifications_name = <NotificationsHandler as crate::events::consumer::Handler>::NAME;
        Ok(Arc::new(Self {
            identity: Identity::new(&config)?,
            reads: db::replica::Reads::new(db.clone(), replica, metrics.reads()),
            metrics,
            relay: Arc::default(),
            notifications: config
                .events
                .consumers
                .contains(&notifications_name)
                .then(|| ConsumerStatus::new(notifications_name, source)),
            live: LiveFeed::new(config.live.feed_buffer.get(), !config.events.has_broker()),
            shutdown: watch::Sender::new(false),
            db,
            config,
        }))
    }

    /// Starts a transaction on the request pool (see [`db::begin`]).
    pub async fn begin(&self) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
        db::begin(&self.db, &self.metrics).await
    }

    /// Runs a transaction, again when PostgreSQL rolled it back for a collision (see
    /// [`db::retrying`]).
    pub async fn retrying<T, Attempt>(
        &self,
        transaction: impl FnMut() -> Attempt,
    ) -> Result<T, crate::error::AppError>
    where
        Attempt: Future<Output = Result<T, crate::error::AppError>>,
    {
        db::retrying(&self.metrics, transaction).await
    }

    /// Today's deadlines for visits, as this instance's configuration reads them.
    pub fn deadlines(&self) -> crate::visits::Deadlines {
        crate::visits::Deadlines::now(self.config.visits.completion_grace_days)
    }
}
