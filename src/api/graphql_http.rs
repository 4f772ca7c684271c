//! GraphQL over HTTP on `/graphql`: POST for any operation (one, or a batch), GET for queries, a
//! WebSocket upgrade for subscriptions, and GraphiQL for a browser asking for a page.
use std::net::SocketAddr;

use async_graphql::{BatchRequest, BatchResponse};
use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, RawQuery, State,
        rejection::BytesRejection,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, header},
};

use super::{
    client_address::client_address,
    errors::{
        ErrorCode, TOO_LARGE, coded_error, mutation_over_get, not_acceptable, transport_error,
    },
    execution::{execute, execute_parsed, refused_document, runs_a_mutation},
    graphiql, negotiation, persisted, request_data,
    state::ApiState,
    websocket,
};

pub async fn graphql_post(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    // A body without a content type is not JSON by anyone's word.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|content_type| {
            content_type
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return transport_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/json",
        );
    }
    let Some(media_type) = negotiation::negotiate(&headers) else {
        return not_acceptable();
    };
    let body = match body {
        Ok(body) => body,
        Err(refused) if refused.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return transport_error(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
        }
        Err(refused) => return transport_error(refused.status(), &refused.body_text()),
    };
    let batch = match read_batch(&body) {
        Ok(batch) => batch,
        Err(error) => {
            return transport_error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a GraphQL request in JSON: {error}"),
            );
        }
    };
    match batch {
        BatchRequest::Single(request) => {
            let request = with_request_data(request, &state, &headers, peer);
            let response = execute(&state, &headers, request).await;
            negotiation::respond(media_type, response.into())
        }
        BatchRequest::Batch(requests) => {
            if requests.is_empty() {
                return transport_error(
                    StatusCode::BAD_REQUEST,
                    "the batch is empty: send at least one operation",
                );
            }
            let most = state.app.config.graphql.max_batch_operations.get();
            if requests.len() > most {
                return coded_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::QueryTooComplex,
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
                responses.push(execute(&state, &headers, request).await);
            }
            negotiation::respond(media_type, BatchResponse::Batch(responses))
        }
    }
}

/// One operation, or a batch of them when the body is a JSON array: read by its first character,
/// so an empty array is an empty batch (refused as such), not an operation with no document.
/// async-graphql's request has no `documentId`: a body that mentions one is read again for it.
fn read_batch(body: &[u8]) -> Result<BatchRequest, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "documentId")]
        document_id: Option<async_graphql::Value>,
    }
    let names_documents = body.windows(12).any(|window| window == b"\"documentId\"");
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        let mut requests: Vec<async_graphql::Request> = serde_json::from_slice(body)?;
        if names_documents {
            let named: Vec<Named> = serde_json::from_slice(body)?;
            for (request, named) in requests.iter_mut().zip(named) {
                persisted::carry_document_id(request, named.document_id);
            }
        }
        Ok(BatchRequest::Batch(requests))
    } else {
        let mut request: async_graphql::Request = serde_json::from_slice(body)?;
        if names_documents {
            let named: Named = serde_json::from_slice(body)?;
            persisted::carry_document_id(&mut request, named.document_id);
        }
        Ok(BatchRequest::Single(request))
    }
}

/// A WebSocket upgrade is a subscription client; anything else is a query over GET.
pub async fn graphql_get(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    websocket: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    RawQuery(query_string): RawQuery,
) -> axum::response::Response {
    match websocket {
        Ok(upgrade) => {
            let client = client_address(
                peer.ip(),
                &headers,
                &state.app.config.server.trusted_proxies,
            );
            return websocket::upgrade(
                upgrade,
                state.schema.clone(),
                state.app.clone(),
                state.live_limits.clone(),
                state.persisted.clone(),
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
    state: ApiState,
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
        if wants_html && state.app.config.graphql.graphiql {
            return graphiql::html();
        }
        return transport_error(StatusCode::BAD_REQUEST, NO_QUERY);
    }
    let Some(media_type) = negotiation::negotiate(&headers) else {
        return not_acceptable();
    };
    let mut request = match request_over_get(&query_string) {
        Ok(request) => request,
        Err(error) => return transport_error(StatusCode::BAD_REQUEST, &error),
    };
    // Before the method check: a hash-only GET may name a mutation.
    if let Err(refused) = state.persisted.resolve(&mut request) {
        let response = refused_document(&state, refused);
        return negotiation::respond(media_type, response.into());
    }
    let unkept = state.documents.attach(&mut request);
    if runs_a_mutation(&mut request) {
        return mutation_over_get();
    }
    let request = with_request_data(request, &state, &headers, peer);
    let response = execute_parsed(&state, &headers, request, unkept).await;
    negotiation::respond(media_type, response.into())
}

const NO_QUERY: &str = "send a `query` parameter, or POST a JSON body";

/// A request from GET's parameters. async-graphql's own reader expects `operation_name`; the
/// specification (and every client) sends `operationName`, so both are read.
fn request_over_get(query_string: &str) -> Result<async_graphql::Request, String> {
    #[derive(serde::Deserialize)]
    struct Parameters {
        query: Option<String>,
        #[serde(rename = "operationName", alias = "operation_name")]
        operation_name: Option<String>,
        variables: Option<String>,
        extensions: Option<String>,
        #[serde(rename = "documentId")]
        document_id: Option<String>,
    }
    let parameters: Parameters = serde_urlencoded::from_str(query_string)
        .map_err(|error| format!("the query string cannot be read: {error}"))?;
    let mut request = async_graphql::Request::new(parameters.query.clone().unwrap_or_default());
    request.operation_name = parameters.operation_name;
    if let Some(variables) = parameters.variables {
        request.variables = serde_json::from_str(&variables)
            .map_err(|error| format!("`variables` is not a JSON object: {error}"))?;
    }
    if let Some(extensions) = parameters.extensions {
        request.extensions = serde_json::from_str(&extensions)
            .map_err(|error| format!("`extensions` is not a JSON object: {error}"))?;
    }
    persisted::carry_document_id(&mut request, parameters.document_id.map(Into::into));
    // Only a persisted query may come without its document.
    if parameters.query.is_none()
        && !request.extensions.contains_key("persistedQuery")
        && !request.extensions.contains_key(persisted::DOCUMENT_ID)
    {
        return Err(NO_QUERY.to_string());
    }
    Ok(request)
}

fn with_request_data(
    request: async_graphql::Request,
    state: &ApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> async_graphql::Request {
    let client = client_address(peer.ip(), headers, &state.app.config.server.trusted_proxies);
    let bearer = request_data::bearer_from_headers(headers).map(str::to_string);
    request_data::attach(request, &state.app, bearer, client)
}
