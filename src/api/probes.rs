//! What orchestrators and scrapers ask an instance: `/readyz` (may it take traffic?) and
//! `/metrics` (what has it done?). `/healthz` needs nothing and lives with the routes.
use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};

use super::state::ApiState;
use crate::events;

/// A probe with a 1-2 s timeout must get an answer, whatever the database is doing.
const READINESS_BUDGET: Duration = Duration::from_millis(800);

/// Ready when the database answers and no consumer it runs has stalled (made no progress for
/// `CONSUMER_STALL_SECONDS` while events wait). The relay's state is reported, not judged: with
/// the broker down, mutations go on and the log waits, so the instance stays in service.
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    match tokio::time::timeout(READINESS_BUDGET, readiness(&state)).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!("database did not answer the readiness check in time");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    serde_json::json!({ "status": "unavailable", "database": "no answer in time" }),
                ),
            )
        }
    }
}

async fn readiness(state: &ApiState) -> (StatusCode, Json<serde_json::Value>) {
    let app = &state.app;
    if let Err(error) = app.db.ping().await {
        tracing::warn!(%error, "database unreachable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "database": "unreachable" })),
        );
    }
    let relay = if !app.config.events.has_broker() {
        None
    } else {
        let lag = match events::log::lag(&app.db, events::relay::CHECKPOINT).await {
            Ok(lag) => Some(lag),
            Err(error) => {
                tracing::warn!(%error, "cannot measure the relay's lag");
                None
            }
        };
        Some(app.relay.report(lag))
    };
    // Only the consumers this instance runs: one left to worker instances neither costs this
    // instance a lag count per probe nor takes it out of service when it stalls there.
    let mut consumers = Vec::new();
    if let Some(status) = &app.notifications {
        match events::consumers::health(&app.db, status, app.config.events.consumer_stall_after)
            .await
        {
            Ok(health) => consumers.push(health),
            Err(error) => tracing::warn!(%error, "cannot measure the consumers"),
        }
    }
    let stalled: Vec<&str> = consumers
        .iter()
        .filter(|consumer| consumer.stalled)
        .map(|consumer| consumer.name)
        .collect();
    let (status, label) = if stalled.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        tracing::warn!(?stalled, "consumers stalled");
        (StatusCode::SERVICE_UNAVAILABLE, "stalled")
    };
    (
        status,
        Json(serde_json::json!({
            "status": label,
            "database": "ok",
            "stalled": stalled,
            "consumers": consumers,
            "relay": relay,
            "replica": app.reads.watch().map(|watch| watch.report()),
            "live": {
                "feed": app.live.report(),
                "sockets": state.live_limits.sockets(),
                "subscriptions": state.live_limits.subscriptions(),
            },
        })),
    )
}

/// `GET /metrics`, with what the instance knows now set beside what was counted.
pub async fn metrics_text(State(state): State<ApiState>) -> axum::response::Response {
    let app = &state.app;
    let recorder = &app.metrics;
    let pool = app.db.pool();
    let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
    recorder.set_pool(
        i64::from(pool.size()) - idle,
        idle,
        i64::from(app.config.database.pool_size.get()),
    );
    if let Some(watch) = app.reads.watch() {
        let lag = watch.report().lag_ms.map(Duration::from_millis);
        recorder.set_replica_lag(lag);
    }
    recorder.set_live(
        state.live_limits.sockets(),
        state.live_limits.subscriptions(),
    );
    // The database parts are bounded like /readyz's: a scrape must get an answer.
    if app.config.events.has_broker() {
        let lag = tokio::time::timeout(
            READINESS_BUDGET,
            events::log::lag(&app.db, events::relay::CHECKPOINT),
        )
        .await
        .ok()
        .and_then(Result::ok);
        let report = app.relay.report(lag);
        recorder.set_relay(
            report.leader,
            report.broker_connected,
            report.published,
            report.lag.map(|lag| lag.events),
        );
    }
    // A consumer this instance does not run is reported by the instances that do.
    if let Some(status) = &app.notifications
        && let Ok(Ok(health)) = tokio::time::timeout(
            READINESS_BUDGET,
            events::consumers::health(&app.db, status, app.config.events.consumer_stall_after),
        )
        .await
    {
        recorder.set_consumer(
            health.name,
            health.lag.events,
            health.lag.seconds,
            health.handled,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        recorder.encode(),
    )
        .into_response()
}
