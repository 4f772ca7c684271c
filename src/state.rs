//! What one instance shares across requests and background tasks, wired once at start-up.
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::watch;

use crate::{
    config::Config,
    events::{
        consumers::{ConsumerStatus, Source},
        feed::LiveFeed,
        relay::RelayStatus,
    },
    identity::Identity,
    notifications::NotificationsHandler,
};

/// Services shared by every request of one instance.
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Config,
    pub identity: Identity,
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
    pub fn new(config: Config, db: DatabaseConnection) -> anyhow::Result<Arc<Self>> {
        let source = if config.nats_servers.is_empty() {
            Source::Postgres
        } else {
            Source::Jetstream
        };
        let notifications_name = <NotificationsHandler as crate::events::consumer::Handler>::NAME;
        Ok(Arc::new(Self {
            identity: Identity::new(&config)?,
            relay: Arc::default(),
            notifications: config
                .consumers
                .contains(&notifications_name)
                .then(|| ConsumerStatus::new(notifications_name, source)),
            live: LiveFeed::new(config.live.feed_buffer, config.nats_servers.is_empty()),
            shutdown: watch::Sender::new(false),
            db,
            config,
        }))
    }

    /// Today's deadlines for visits, as this instance's configuration reads them.
    pub fn deadlines(&self) -> crate::visits::Deadlines {
        crate::visits::Deadlines::now(self.config.completion_grace_days)
    }
}
