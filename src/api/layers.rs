//! The layers every HTTP request passes, from the outside in: request id, the request's span,
//! timeout, CORS and the body limit. The response counter and the JSON charset wrap all of them.
use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
};
use tower::ServiceBuilder;
use tower_http::{
    LatencyUnit,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};

use super::{
    client_address::client_address,
    errors::{ErrorCode, TOO_LARGE, coded_error, transport_error},
    request_data,
    state::ApiState,
};
use crate::config::Config;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Browsers may call from the origins `CORS_ORIGINS` lists (and, in development, from local ones).
fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .server
        .cors
        .origins
        .iter()
        .filter_map(|origin| match HeaderValue::from_str(origin) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(%origin, "ignoring an unusable CORS origin");
                None
            }
        })
        .collect();
    let local_origins = config.server.cors.local_origins;
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.contains(origin) || (local_origins && is_local_origin(origin))
        }))
        .allow_methods([Method::GET, Method::POST])
        // What browser clients commonly add: Apollo's client identification and tracing context.
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("apollographql-client-name"),
            HeaderName::from_static("apollographql-client-version"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("sentry-trace"),
            HeaderName::from_static("baggage"),
        ])
        .expose_headers([REQUEST_ID])
        .max_age(config.server.cors.max_age)
}

/// `router` inside the request id, its span, the timeout, CORS and the body limit, in that order
/// from the outside in.
pub fn around_requests<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    config: &Config,
) -> Router<S> {
    let trusted_proxies = Arc::new(config.server.trusted_proxies.clone());
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(RequestSpan { trusted_proxies })
                    .on_response(
                        DefaultOnResponse::new()
                            .level(tracing::Level::INFO)
                            .latency_unit(LatencyUnit::Millis),
                    ),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                config.server.request_timeout,
            ))
            .layer(cors(config))
            .layer(RequestBodyLimitLayer::new(
                config.server.max_body_bytes.get(),
            ))
            .layer(DefaultBodyLimit::max(config.server.max_body_bytes.get())),
    )
}

/// The span every log line of a request is written in.
#[derive(Clone)]
pub struct RequestSpan {
    trusted_proxies: Arc<crate::config::TrustedProxies>,
}

impl<B> tower_http::trace::MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> tracing::Span {
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-");
        // The address the throttle counts, so a log line and a throttle agree.
        let client =
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| {
                    client_address(peer.ip(), request.headers(), &self.trusted_proxies)
                });
        // The W3C trace this request belongs to, so its lines can be found from the caller's.
        let trace_id = request_data::traceparent(request.headers())
            .and_then(|traceparent| traceparent.split('-').nth(1).map(str::to_string));
        tracing::info_span!(
            "request",
            method = %request.method(),
            uri = %request.uri().path(),
            request_id,
            client = client.map(tracing::field::display),
            trace_id,
            // Filled in once known: by `execute_parsed`, and when the caller is authenticated.
            operation = tracing::field::Empty,
            user_id = tracing::field::Empty,
        )
    }
}

/// Counts every response by route (the matched pattern, so the label set stays bounded) and status.
pub async fn count_response(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let response = next.run(request).await;
    state
        .app
        .metrics
        .http_response(&route, response.status().as_u16());
    response
}

/// Every response a client parses as JSON says it is UTF-8 (some mobile stacks assume Latin-1
/// otherwise), and what the layers below answer on their own (a body over the limit, a timeout)
/// comes in the GraphQL error shape instead of bare text.
pub async fn json_with_charset(response: axum::response::Response) -> axum::response::Response {
    let is_json = |response: &axum::response::Response| {
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|content_type| content_type.to_ascii_lowercase().contains("json"))
    };
    let response = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !is_json(&response) => {
            transport_error(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
        }
        StatusCode::REQUEST_TIMEOUT if !is_json(&response) => coded_error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Internal,
            "the request took too long; it may be retried",
        ),
        _ => response,
    };
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase);
    let is_json = is_json(&response);
    let mut response = response;
    if let Some(content_type) = content_type
        && is_json
        && !content_type.contains("charset")
        && let Ok(value) = HeaderValue::from_str(&format!("{content_type}; charset=utf-8"))
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port: where development servers run.
fn is_local_origin(origin: &HeaderValue) -> bool {
    let Ok(uri) = axum::http::Uri::try_from(origin.as_bytes()) else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
        && uri.path_and_query().is_none_or(|path| path.as_str() == "/")
}
