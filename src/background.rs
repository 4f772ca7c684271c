//! Every task an instance runs beside serving requests, started in one place so start-up reads as a
//! table of contents and shutdown stops them all.
use std::{sync::Arc, time::Duration};

use crate::db::Database;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinSet;

use crate::{
    db,
    events::{
        broadcast, broker,
        consumers::{self, ConsumerStatus},
        feed,
        relay::{self, RelaySettings},
        retention,
    },
    notifications::NotificationsHandler,
    state::AppState,
};

pub struct BackgroundTasks {
    tasks: JoinSet<()>,
}

impl BackgroundTasks {
    pub fn start(state: &Arc<AppState>) -> Self {
        let mut tasks = JoinSet::new();
        tasks.spawn(forget_idle_login_throttles(state.clone()));
        tasks.spawn(follow_session_revocations(state.clone()));
        if let Some(settings) = relay_settings(state) {
            tasks.spawn(relay::run(state.db.clone(), settings, state.relay.clone()));
        }
        match &state.notifications {
            Some(status) => {
                tasks.spawn(consume_notifications(state.clone(), status.clone()));
            }
            // Said once at start: nothing else on this instance will mention the consumer again.
            None => tracing::info!(
                "CONSUMERS: the notifications consumer runs on other instances, not this one"
            ),
        }
        tasks.spawn(follow_live_feed(state.clone()));
        if !state.config.events.has_broker() {
            tasks.spawn(announce_the_log(state.clone()));
        }
        if state.reads.watch().is_some() {
            tasks.spawn(watch_replica(state.clone()));
        }
        tasks.spawn(sweep_expired_visits(state.clone()));
        if state.config.events.outbox_retention.is_some() {
            tasks.spawn(prune_outbox(state.clone()));
        }
        Self { tasks }
    }

    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Throttle buckets of addresses that stopped trying would otherwise be kept for good.
async fn forget_idle_login_throttles(state: Arc<AppState>) {
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    loop {
        every_minute.tick().await;
        state.identity.throttle.forget_idle();
    }
}

/// Writes `EXPIRED` (and `visit.expired`) on visits whose time ran out, a batch at a time until
/// none is left; every instance offers, one sweeps at a time.
async fn sweep_expired_visits(state: Arc<AppState>) {
    const BATCH: u64 = 500;
    let mut every = tokio::time::interval(state.config.visits.expiry_sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let deadlines = state.deadlines();
        loop {
            match crate::visits::expire_due(&state.db, &deadlines, BATCH).await {
                Ok(expired) if expired > 0 => {
                    tracing::info!(expired, "visits expired");
                    if (expired as u64) < BATCH {
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "expiry sweep failed; retried at the next interval");
                    break;
                }
            }
        }
    }
}

/// Revocations on other instances evict sessions from this one's cache.
async fn follow_session_revocations(state: Arc<AppState>) {
    let listen_with = listen_options(&state, "session revocations");
    state
        .identity
        .sessions
        .follow_revocations(&state.db, listen_with)
        .await;
}

/// Where a `LISTEN` connects: `DATABASE_DIRECT_URL` when set (it needs a session, which a
/// transaction pooler does not keep), else the pool's own server; named for `purpose`.
fn listen_options(state: &AppState, purpose: &str) -> sea_orm::sqlx::postgres::PgConnectOptions {
    let direct = state
        .config
        .database
        .direct_url
        .as_ref()
        .and_then(|url| url.expose_secret().parse().ok());
    direct
        .unwrap_or_else(|| (*state.db.pool().connect_options()).clone())
        .application_name(&format!("{} {purpose} listener", db::APPLICATION_NAME))
}

/// The relay runs when a broker is configured.
fn relay_settings(state: &AppState) -> Option<RelaySettings> {
    let config = &state.config;
    if !config.events.has_broker() {
        return None;
    }
    let direct_url: SecretString = config
        .database
        .direct_url
        .clone()
        .or_else(|| config.database.url.clone())?;
    Some(RelaySettings {
        servers: config.events.nats_servers.clone(),
        stream_replicas: config.events.nats_stream_replicas.get(),
        direct_url,
        batch_size: config.events.relay_batch_size.get(),
    })
}

/// Measures the replica's state and lag, so reads skip it at once when it stops, pauses or
/// falls behind. On a connection of its own: under load the read pool's are all busy, and a watch
/// that waited for one would call a healthy replica down.
async fn watch_replica(state: Arc<AppState>) {
    let Some(watch) = state.reads.watch().cloned() else {
        return;
    };
    let replica = match db::connect_replica(&state.config, 1, "replica watch", Some(&watch)).await {
        Ok(Some((replica, _))) => replica,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the replica cannot be watched; reads stay on the primary");
            return;
        }
    };
    let mut every = tokio::time::interval(db::replica::WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        watch.watch_once(&state.db, &replica).await;
    }
}

/// Applies `OUTBOX_RETENTION_DAYS`, hourly. Deleting is idempotent, so every instance may do it.
async fn prune_outbox(state: Arc<AppState>) {
    let Some(keep) = state.config.events.outbox_retention else {
        return;
    };
    let relay_enabled = state.config.events.has_broker();
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        match retention::prune(&state.db, keep, relay_enabled).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "outbox: pruned events past retention"),
            Err(error) => tracing::warn!(%error, "outbox: pruning failed"),
        }
    }
}

/// A one-connection pool of a background reader's own (see [`db::connect_sized`]); the request
/// pool if that cannot be had.
async fn own_connection(state: &AppState, purpose: &str) -> Database {
    let Some(url) = state.config.database.url.as_ref() else {
        return state.db.clone();
    };
    loop {
        let name = format!("{} {purpose}", db::APPLICATION_NAME);
        match db::connect_sized(url, &state.config, 1, &name).await {
            Ok(connection) => return connection,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), purpose, "no connection of its own yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The live feed for subscriptions: from the broker when there is one, else from the log.
async fn follow_live_feed(state: Arc<AppState>) {
    let feed = state.live.clone();
    if !state.config.events.has_broker() {
        let listen_with = listen_options(&state, "live feed");
        let reader = own_connection(&state, "live feed").await;
        let replica = match db::connect_replica(&state.config, 1, "live feed", state.reads.watch())
            .await
        {
            Ok(replica) => replica.map(|(pool, _)| pool),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "live feed reads the primary only");
                None
            }
        };
        let reads = state.reads.over(reader.clone(), replica);
        return feed::follow_log(reader, reads, listen_with, feed).await;
    }
    let options = broker::options("home-visits live feed");
    match broker::connect(&state.config.events.nats_servers, options).await {
        Ok(client) => {
            feed::follow_jetstream(client, state.config.events.nats_stream_replicas.get(), feed)
                .await
        }
        Err(error) => tracing::error!(%error, "live updates disabled: cannot use NATS_URL"),
    }
}

/// Offers to be the deployment's one reader of the log for the live feeds (see `broadcast`).
async fn announce_the_log(state: Arc<AppState>) {
    let leader_with = listen_options(&state, "live feed");
    let reader = own_connection(&state, "live feed leader").await;
    broadcast::run(reader, leader_with, state.live.leadership()).await;
}

/// The notifications read model, from the broker when there is one, else from the log.
async fn consume_notifications(state: Arc<AppState>, status: Arc<ConsumerStatus>) {
    let db = own_connection(&state, "notifications consumer").await;
    if !state.config.events.has_broker() {
        return consumers::run_from_log(db, NotificationsHandler, status).await;
    }
    let options = broker::options("home-visits consumers");
    match broker::connect(&state.config.events.nats_servers, options).await {
        Ok(client) => {
            consumers::run_from_jetstream(
                db,
                client,
                state.config.events.nats_stream_replicas.get(),
                NotificationsHandler,
                status,
            )
            .await;
        }
        Err(error) => {
            tracing::error!(%error, "notifications consumer disabled: cannot use NATS_URL")
        }
    }
}
