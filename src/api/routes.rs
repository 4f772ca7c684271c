//! The service's routes: `/graphql` (POST; GET for queries, subscriptions and GraphiQL),
//! `/healthz`, `/readyz` and `/metrics` (beside them, or on an address of its own).
use std::sync::Arc;

use axum::{Router, routing::get};

use super::{
    graphiql,
    graphql_http::{graphql_get, graphql_post},
    layers,
    probes::{metrics_text, readyz},
    state::ApiState,
    trusted::TrustedDocuments,
};
use crate::{config::MetricsExposure, state::AppState};

/// The service's routes, and `/metrics` on a router of its own when `METRICS` names an address.
pub struct Routers {
    pub api: Router,
    pub metrics: Option<Router>,
}

/// `trusted`: the only documents requests may run (`TRUSTED_DOCUMENTS`), when there are such.
pub fn routers(app: Arc<AppState>, trusted: Option<Arc<TrustedDocuments>>) -> Routers {
    let state = ApiState::new(app, trusted);
    let config = &state.app.config;
    let mut api = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if config.server.metrics == MetricsExposure::SamePort {
        api = api.route("/metrics", get(metrics_text));
    }
    if config.graphql.graphiql {
        api = api.merge(graphiql::routes());
    }
    let api = layers::around_requests(api, config)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            layers::count_response,
        ))
        // Outermost, so it also sees what the layers answer on their own.
        .layer(axum::middleware::map_response(layers::json_with_charset))
        .with_state(state.clone());
    let metrics = matches!(config.server.metrics, MetricsExposure::Own(_)).then(|| {
        Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(state.clone())
    });
    Routers { api, metrics }
}
