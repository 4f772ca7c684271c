//! What one instance shares across requests and background tasks, wired once at start-up.
use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    config::Config,
    events::{
        consumers::{ConsumerStatus, Source},
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
    /// The consumers of the event log this instance runs.
    pub notifications: Arc<ConsumerStatus>,
}

impl AppState {
    pub fn new(config: Config, db: DatabaseConnection) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            identity: Identity::new(&config)?,
            relay: Arc::default(),
            notifications: ConsumerStatus::new(
                <NotificationsHandler as crate::events::consumer::Handler>::NAME,
                if config.nats_servers.is_empty() {
                    Source::Postgres
                } else {
                    Source::Jetstream
                },
            ),
            db,
            config,
        }))
    }
}
