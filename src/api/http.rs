//! HTTP routing: `/graphql` (POST, and GET for queries and GraphiQL), `/healthz`, `/readyz`, and
//! the layers every request passes (request id, tracing, timeout, CORS, body limit).
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use async_graphql::ParseRequestError;
use async_graphql::{
    BatchRequest, BatchResponse, Response, ServerError,
    dataloader::DataLoader,
    parser::types::{DocumentOperations, OperationType},
};
use async_graphql_axum::{GraphQLBatchRequest, rejection::GraphQLRejection};
use axum::{
    Json, Router,
    extract::{
        ConnectInfo, DefaultBodyLimit, RawQuery, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::IntoResponse,
    routing::get,
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
    context::{ApiError, RequestContext},
    documents::{ParsedDocuments, Unkept},
    graphiql, input, loaders, negotiation,
    persisted::PersistedQueries,
    schema::{AppSchema, introspection_schema, schema},
    websocket::{self, LiveLimits},
};
use crate::{
    config::MetricsExposure,
    events::{self, trace},
    metrics,
    state::AppState,
};

#[derive(Clone)]
struct HttpState {
    schema: AppSchema,
    /// For operations that read only the schema: looser depth and complexity limits.
    introspection_schema: Option<AppSchema>,
    app: Arc<AppState>,
    live_limits: Arc<LiveLimits>,
    persisted: Arc<PersistedQueries>,
    documents: Arc<ParsedDocuments>,
}

/// Documents an instance remembers for hash-only requests (each at most `MAX_BODY_BYTES`).
const PERSISTED_QUERIES_KEPT: usize = 1000;
/// An app's operations, several versions of it, with room to spare.
const PARSED_DOCUMENTS_KEPT: usize = 256;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The service's routes, and `/metrics` on a router of its own when `METRICS` names an address.
pub struct Routers {
    pub api: Router,
    pub metrics: Option<Router>,
}

pub fn routers(app: Arc<AppState>) -> Routers {
    let config = &app.config;
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|origin| match HeaderValue::from_str(origin) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(%origin, "ignoring an unusable CORS origin");
                None
            }
        })
        .collect();
    let local_origins = config.cors_local_origins;
    let trusted_proxies = Arc::new(config.trusted_proxies.clone());
    let cors = CorsLayer::new()
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
        .max_age(config.cors_max_age);
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &axum::http::Request<_>| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("-");
                    // The address the throttle counts, so a log line and a throttle agree.
                    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(
                        |ConnectInfo(peer)| {
                            client_address(peer.ip(), request.headers(), &trusted_proxies)
                        },
                    );
                    // The W3C trace this request belongs to, so its lines can be found from the caller's.
                    let trace_id = request
                        .headers()
                        .get("traceparent")
                        .and_then(|value| value.to_str().ok())
                        .and_then(trace::parse)
                        .and_then(|traceparent| traceparent.split('-').nth(1).map(str::to_string));
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        uri = %request.uri().path(),
                        request_id,
                        client = client.map(tracing::field::display),
                        trace_id,
                        // Filled in once known: by `execute`, and when the caller is authenticated.
                        operation = tracing::field::Empty,
                        user_id = tracing::field::Empty,
                    )
                })
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                ),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(cors)
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    let state = HttpState {
        schema: schema(app.clone()),
        introspection_schema: introspection_schema(app.clone()),
        app,
        live_limits: Arc::default(),
        persisted: Arc::new(PersistedQueries::new(PERSISTED_QUERIES_KEPT)),
        documents: Arc::new(ParsedDocuments::new(PARSED_DOCUMENTS_KEPT)),
    };
    let metrics_exposure = state.app.config.metrics;
    let mut api = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if metrics_exposure == MetricsExposure::SamePort {
        api = api.route("/metrics", get(metrics_text));
    }
    if state.app.config.graphiql_enabled {
        api = api.merge(graphiql::routes());
    }
    let api = api
        .layer(layers)
        .layer(axum::middleware::from_fn(count_response))
        // Outermost, so it also sees what the layers answer on their own.
        .layer(axum::middleware::map_response(json_with_charset))
        .with_state(state.clone());
    let metrics = matches!(metrics_exposure, MetricsExposure::Own(_)).then(|| {
        Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(state)
    });
    Routers { api, metrics }
}

/// Counts every response by route (the matched pattern, so the label set stays bounded) and status.
async fn count_response(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let response = next.run(request).await;
    metrics::metrics().http_response(&route, response.status().as_u16());
    response
}

/// `GET /metrics`, with what the instance knows now set beside what was counted.
async fn metrics_text(State(state): State<HttpState>) -> axum::response::Response {
    let app = &state.app;
    let recorder = metrics::metrics();
    let pool = app.db.get_postgres_connection_pool();
    let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
    recorder.set_pool(
        i64::from(pool.size()) - idle,
        idle,
        i64::from(app.config.database_pool_size),
    );
    recorder.set_live(
        state.live_limits.sockets(),
        state.live_limits.subscriptions(),
    );
    // The database parts are bounded like /readyz's: a scrape must get an answer.
    if !app.config.nats_servers.is_empty() {
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
            events::consumers::health(&app.db, status, app.config.consumer_stall_after),
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

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port: where development servers run.
fn is_local_origin(origin: &HeaderValue) -> bool {
    let Ok(uri) = axum::http::Uri::try_from(origin.as_bytes()) else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
        && uri.path_and_query().is_none_or(|path| path.as_str() == "/")
}

async fn graphql_post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<GraphQLBatchRequest, GraphQLRejection>,
) -> axum::response::Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if let Some(content_type) = content_type
        && !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    {
        return transport_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/json",
        );
    }
    let Some(media_type) = negotiation::negotiate(&headers) else {
        return not_acceptable();
    };
    let batch = match request {
        Ok(request) => request.into_inner(),
        Err(GraphQLRejection(refused)) => return refused_request(&refused),
    };
    match batch {
        BatchRequest::Single(request) => {
            let request = with_request_data(request, &state, &headers, peer);
            let response = with_error_codes(execute(&state, &headers, request).await);
            negotiation::respond(media_type, response.into())
        }
        BatchRequest::Batch(requests) => {
            if requests.is_empty() {
                return transport_error(
                    StatusCode::BAD_REQUEST,
                    "the batch is empty: send at least one operation",
                );
            }
            let most = state.app.config.graphql_max_batch_operations;
            if requests.len() > most {
                return coded_error(
                    StatusCode::BAD_REQUEST,
                    "QUERY_TOO_COMPLEX",
                    &format!(
                        "a batch holds 1 to {most} operations; this one holds {}",
                        requests.len()
                    ),
                );
            }
            // One after another, each with its own caller and loaders, as if sent one by one:
            // every login in it passes the throttle, every operation its complexity limit.
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                let request = with_request_data(request, &state, &headers, peer);
                responses.push(with_error_codes(execute(&state, &headers, request).await));
            }
            negotiation::respond(media_type, BatchResponse::Batch(responses))
        }
    }
}

/// What async-graphql could not read as a request, in words a client can act on (its own
/// rejection answers with Rust's debug text and no content type).
fn refused_request(refused: &ParseRequestError) -> axum::response::Response {
    match refused {
        ParseRequestError::PayloadTooLarge => transport_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this server accepts",
        ),
        ParseRequestError::InvalidRequest(error) => transport_error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not a GraphQL request in JSON: {error}"),
        ),
        other => transport_error(StatusCode::BAD_REQUEST, &other.to_string()),
    }
}

/// The GraphQL error shape for a request refused before GraphQL saw it.
fn transport_error(status: StatusCode, message: &str) -> axum::response::Response {
    coded_error(status, "BAD_REQUEST", message)
}

/// Every response a client parses as JSON says it is UTF-8 (some mobile stacks assume Latin-1
/// otherwise), and what the layers below answer on their own (a body over the limit, a timeout)
/// comes in the GraphQL error shape instead of bare text.
async fn json_with_charset(response: axum::response::Response) -> axum::response::Response {
    let is_json = |response: &axum::response::Response| {
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|content_type| content_type.to_ascii_lowercase().contains("json"))
    };
    let response = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !is_json(&response) => transport_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT if !is_json(&response) => coded_error(
            StatusCode::REQUEST_TIMEOUT,
            "INTERNAL",
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

/// A WebSocket upgrade is a subscription client; anything else is a query over GET.
async fn graphql_get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    websocket: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    RawQuery(query_string): RawQuery,
) -> axum::response::Response {
    match websocket {
        Ok(upgrade) => {
            let client = client_address(peer.ip(), &headers, &state.app.config.trusted_proxies);
            return websocket::upgrade(
                upgrade,
                state.schema.clone(),
                state.app.clone(),
                state.live_limits.clone(),
                client,
            );
        }
        // Meant as a WebSocket, but not one that can be upgraded: say why, rather than answer
        // as if it were a query (which clients would only report as close 1006).
        Err(refused) if headers.contains_key(header::UPGRADE) => {
            return transport_error(refused.status(), &refused.body_text());
        }
        Err(_) => {}
    }
    query_over_get(state, peer, headers, query_string).await
}

/// Queries only: a mutation must not run from a link or an `<img>` tag. Without a query, browsers
/// get GraphiQL (when enabled).
async fn query_over_get(
    state: HttpState,
    peer: SocketAddr,
    headers: HeaderMap,
    query_string: Option<String>,
) -> axum::response::Response {
    let query_string = query_string.unwrap_or_default();
    if query_string.is_empty() {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
        if wants_html && state.app.config.graphiql_enabled {
            return graphiql::html();
        }
        return graphql_error(
            StatusCode::BAD_REQUEST,
            "send a `query` parameter, or POST a JSON body",
        );
    }
    let Some(media_type) = negotiation::negotiate(&headers) else {
        return not_acceptable();
    };
    let mut request = match request_over_get(&query_string) {
        Ok(request) => request,
        Err(error) => return graphql_error(StatusCode::BAD_REQUEST, &error),
    };
    // Before the method check: a hash-only GET may name a mutation.
    if let Err(refused) = state.persisted.resolve(&mut request) {
        let response = Response::from_errors(vec![refused.into_server_error()]);
        return negotiation::respond(media_type, response.into());
    }
    let unkept = state.documents.attach(&mut request);
    let operation_name = request.operation_name.clone();
    if let Ok(document) = request.parsed_query() {
        let is_mutation = match &document.operations {
            DocumentOperations::Single(operation) => operation.node.ty == OperationType::Mutation,
            DocumentOperations::Multiple(operations) => match &operation_name {
                Some(name) => operations
                    .get(name.as_str())
                    .is_some_and(|operation| operation.node.ty == OperationType::Mutation),
                None => operations
                    .values()
                    .any(|operation| operation.node.ty == OperationType::Mutation),
            },
        };
        if is_mutation {
            let mut response = graphql_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "mutations are only accepted with POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
    }
    let request = with_request_data(request, &state, &headers, peer);
    let response = with_error_codes(execute_parsed(&state, &headers, request, unkept).await);
    negotiation::respond(media_type, response.into())
}

/// A request from GET's parameters. async-graphql's own reader expects `operation_name`; the
/// specification (and every client) sends `operationName`, so both are read.
fn request_over_get(query_string: &str) -> Result<async_graphql::Request, String> {
    #[derive(serde::Deserialize)]
    struct Parameters {
        #[serde(default)]
        query: String,
        #[serde(rename = "operationName", alias = "operation_name")]
        operation_name: Option<String>,
        variables: Option<String>,
        extensions: Option<String>,
    }
    let parameters: Parameters = serde_urlencoded::from_str(query_string)
        .map_err(|error| format!("the query string cannot be read: {error}"))?;
    let mut request = async_graphql::Request::new(parameters.query);
    request.operation_name = parameters.operation_name;
    if let Some(variables) = parameters.variables {
        request.variables = serde_json::from_str(&variables)
            .map_err(|error| format!("`variables` is not a JSON object: {error}"))?;
    }
    if let Some(extensions) = parameters.extensions {
        request.extensions = serde_json::from_str(&extensions)
            .map_err(|error| format!("`extensions` is not a JSON object: {error}"))?;
    }
    Ok(request)
}

fn not_acceptable() -> axum::response::Response {
    transport_error(
        StatusCode::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
}

/// Ready when the database answers and no consumer it runs has stalled (made no progress for
/// `CONSUMER_STALL_SECONDS` while events wait). The relay's state is reported, not judged: with
/// the broker down, mutations go on and the log waits, so the instance stays in service.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    // A probe with a 1-2 s timeout must get an answer, whatever the database is doing.
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

const READINESS_BUDGET: std::time::Duration = std::time::Duration::from_millis(800);

async fn readiness(state: &HttpState) -> (StatusCode, Json<serde_json::Value>) {
    let app = &state.app;
    if let Err(error) = app.db.ping().await {
        tracing::warn!(%error, "database unreachable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "database": "unreachable" })),
        );
    }
    let relay = if app.config.nats_servers.is_empty() {
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
        match events::consumers::health(&app.db, status, app.config.consumer_stall_after).await {
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
            "live": {
                "feed": app.live.report(),
                "sockets": state.live_limits.sockets(),
                "subscriptions": state.live_limits.subscriptions(),
            },
        })),
    )
}

/// Runs the request with its W3C `traceparent` (if valid) current, so the events it records carry it.
async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
) -> Response {
    if let Err(refused) = state.persisted.resolve(&mut request) {
        return Response::from_errors(vec![refused.into_server_error()]);
    }
    let unkept = state.documents.attach(&mut request);
    execute_parsed(state, headers, request, unkept).await
}

/// [`execute`] for a request already given its parsed document; keeps the document if it was
/// parsed for this request and the request shows it was accepted.
async fn execute_parsed(
    state: &HttpState,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
    unkept: Option<Unkept>,
) -> Response {
    if let Err(refused) = input::check(&mut request) {
        let error: async_graphql::Error = ApiError::from(refused).into();
        return Response::from_errors(vec![error.into_server_error(Default::default())]);
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(trace::parse);
    let schema = match &state.introspection_schema {
        Some(introspection) if reads_only_the_schema(&mut request) => introspection,
        _ => &state.schema,
    };
    let operation_name = request.operation_name.clone();
    tracing::Span::current().record(
        "operation",
        operation_name.as_deref().unwrap_or("anonymous"),
    );
    let started = std::time::Instant::now();
    let response = trace::with_traceparent(traceparent, schema.execute(request)).await;
    let outcome = response
        .errors
        .first()
        .map_or("ok".to_string(), |error| error_code(error).to_string());
    metrics::metrics().operation(
        operation_name.as_deref(),
        negotiation::ran(&response),
        &outcome,
        started.elapsed(),
    );
    if let Some(unkept) = unkept
        && !response.errors.iter().any(|error| {
            matches!(
                error_code(error),
                "GRAPHQL_PARSE_FAILED" | "GRAPHQL_VALIDATION_FAILED" | "QUERY_TOO_COMPLEX"
            )
        })
    {
        state.documents.keep(unkept);
    }
    response
}

/// The code an error carries; one without is the client's (see [`with_error_codes`]).
fn error_code(error: &async_graphql::ServerError) -> &str {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("code"))
        .and_then(|code| match code {
            async_graphql::Value::String(code) => Some(code.as_str()),
            _ => None,
        })
        .unwrap_or("BAD_USER_INPUT")
}

/// Whether the operation to run selects only `__schema`, `__type` and `__typename` at its root
/// (GraphiQL's docs, codegen, IDE plugins). Anything else, or a document that does not parse,
/// goes to the data schema and its limits.
fn reads_only_the_schema(request: &mut async_graphql::Request) -> bool {
    let operation_name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations.get(name.as_str()) {
                Some(operation) => operation,
                None => return false,
            }
        }
        // One named operation and no name asked for: that one (as GraphQL's rules say).
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            match operations.values().next() {
                Some(operation) => operation,
                None => return false,
            }
        }
        (DocumentOperations::Multiple(_), None) => return false,
    };
    operation.node.ty == OperationType::Query
        && !operation.node.selection_set.node.items.is_empty()
        && operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|selection| match &selection.node {
                async_graphql::parser::types::Selection::Field(field) => {
                    field.node.name.node.starts_with("__")
                }
                _ => false,
            })
}

/// Per-request data: the caller's credentials and address, and batch loaders whose cache lives
/// only as long as the request, so no response shows another request's stale rows.
fn with_request_data(
    request: async_graphql::Request,
    state: &HttpState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> async_graphql::Request {
    let loader = DataLoader::new(
        loaders::DbLoader {
            db: state.app.db.clone(),
            deadlines: state.app.deadlines(),
        },
        tokio::spawn,
    );
    let client = client_address(peer.ip(), headers, &state.app.config.trusted_proxies);
    request.data(request_context(headers, client)).data(loader)
}

fn request_context(headers: &HeaderMap, client: IpAddr) -> RequestContext {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string());
    RequestContext::new(bearer, client)
}

/// Errors raised by async-graphql while running an operation (an argument it cannot read) carry
/// no code; they are the client's to fix. Parsing, validation and the limits got theirs from
/// [`super::limits`].
pub(super) fn with_error_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    response
}

fn graphql_error(status: StatusCode, message: &str) -> axum::response::Response {
    coded_error(status, "BAD_USER_INPUT", message)
}

fn coded_error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    (status, Json(Response::from_errors(vec![error]))).into_response()
}
