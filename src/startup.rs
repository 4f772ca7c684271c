//! Bind, then serve: `build` binds the listener (port 0 allowed) so callers know the port before
//! the first request, with no sleeps.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::{
    api,
    background::BackgroundTasks,
    config::{Config, MetricsExposure},
    db, local_postgres,
    state::AppState,
};

pub struct Application {
    listener: TcpListener,
    port: u16,
    /// `METRICS` set to an address: `/metrics` is served there alone.
    metrics_listener: Option<TcpListener>,
    /// `TRUSTED_DOCUMENTS`, read and checked before anything is served.
    trusted_documents: Option<Arc<api::TrustedDocuments>>,
    state: Arc<AppState>,
}

/// Connects (provisioning a local PostgreSQL when no `DATABASE_URL` is set), migrates and binds.
pub async fn build(mut config: Config) -> anyhow::Result<Application> {
    if config.auth.jwt_secret_is_ephemeral {
        tracing::warn!(
            "JWT_SECRET is not set: using a random one for this process, so tokens die with it and \
             are not accepted by other instances"
        );
    }
    let db = connect_database(&mut config).await?;
    db::check_transaction_pooler(&db).await?;
    db::migrate_for(&config, &db).await?;
    build_with_database(config, db).await
}

/// The pool on `DATABASE_URL`, or (in development, when it is unset) on the local PostgreSQL,
/// which is provisioned first and then becomes the configuration's `DATABASE_URL`.
pub async fn connect_database(config: &mut Config) -> anyhow::Result<db::Database> {
    let url = match &config.database.url {
        Some(url) => url.clone(),
        None => local_postgres::provision(config).await?,
    };
    config.database.url = Some(url.clone());
    db::connect_to(&url, config).await
}

/// Like [`build`], on a pool the caller already opened and migrated.
pub async fn build_with_database(config: Config, db: db::Database) -> anyhow::Result<Application> {
    let listener = TcpListener::bind(config.server.bind_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.bind_addr))?;
    let port = listener.local_addr()?.port();
    let metrics_listener = match config.server.metrics {
        MetricsExposure::Own(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (METRICS)"))?,
        ),
        _ => None,
    };
    let trusted_documents = match &config.graphql.trusted_documents {
        Some(path) => {
            let documents = api::TrustedDocuments::load(path)?;
            tracing::info!(
                documents = documents.len(),
                "running only the trusted documents of {}",
                path.display()
            );
            Some(Arc::new(documents))
        }
        None => None,
    };
    let size = config.database.pool_size.get();
    let replica = db::connect_replica(&config, size, "reads", None).await?;
    let state = AppState::new(config, db, replica)?;
    Ok(Application {
        listener,
        port,
        metrics_listener,
        trusted_documents,
        state,
    })
}

impl Application {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` has to itself (`METRICS` set to an address; port 0 picks one).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
            .map(|address| address.port())
    }

    pub fn database(&self) -> &db::Database {
        &self.state.db
    }

    /// What the instance shares across requests (its pool and metrics among them).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then shuts down as on a signal.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = BackgroundTasks::start(&self.state);
        tracing::info!(port = self.port, "listening");
        let routers = api::routers(self.state.clone(), self.trusted_documents.clone());
        let metrics = match (self.metrics_listener, routers.metrics) {
            (Some(listener), Some(router)) => {
                tracing::info!(address = ?listener.local_addr().ok(), "serving /metrics");
                let mut stopping = self.state.shutdown.subscribe();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stopping.wait_for(|stopping| *stopping).await;
                        })
                        .await
                }))
            }
            _ => None,
        };
        let state = self.state.clone();
        // Without Nagle's algorithm: a subscription's small frames, written while the last is
        // unacknowledged, would otherwise wait for its ACK (up to the peer's delayed-ACK timer).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set on an accepted connection");
            }
        });
        let serving = axum::serve(
            listener,
            routers
                .api
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stop.await;
            // Sockets are not requests: graceful shutdown does not wait for them. Tell them, so
            // each closes with 1001 and its client reconnects to another instance.
            state.shutdown.send_replace(true);
        });
        // New connections stop at once; what is in flight gets the grace, and no more: an
        // orchestrator kills a process that overstays anyway, with less said about why.
        let grace = self.state.config.server.shutdown_grace;
        let mut stopping = self.state.shutdown.subscribe();
        let served = tokio::select! {
            served = serving.into_future() => served,
            () = async {
                let _ = stopping.wait_for(|stopping| *stopping).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown grace; stopping anyway");
                Ok(())
            }
        };
        background.stop().await;
        if let Some(mut metrics) = metrics {
            // A scraper's half-sent request must not hold the process past the grace either.
            if tokio::time::timeout(grace, &mut metrics).await.is_err() {
                metrics.abort();
            }
        }
        served
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
