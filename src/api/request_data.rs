//! What every operation carries into the schema, built the same way for HTTP and WebSocket: who
//! is asking (the bearer token and the client's address) and batch loaders of its own.
use std::{net::IpAddr, sync::Arc};

use async_graphql::dataloader::DataLoader;
use axum::http::{HeaderMap, header};

use super::{context::RequestContext, loaders};
use crate::{events::trace, state::AppState};

/// The token of an `Authorization` value (`Bearer <token>`). An empty token is no credential:
/// both transports treat it as none sent.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer_from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
}

/// The request's W3C `traceparent`, when it is valid.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(trace::parse)
}

/// The request with its caller's credentials and address, and batch loaders whose cache lives
/// only as long as the operation, so no response shows another request's stale rows.
pub fn attach(
    request: async_graphql::Request,
    app: &Arc<AppState>,
    bearer: Option<String>,
    client: IpAddr,
) -> async_graphql::Request {
    let loader = DataLoader::new(
        loaders::DbLoader {
            db: app.db.clone(),
            reads: app.reads.clone(),
            deadlines: app.deadlines(),
        },
        tokio::spawn,
    );
    request
        .data(RequestContext::new(bearer, client))
        .data(loader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bearer_token_is_no_token() {
        assert_eq!(bearer_token("Bearer abc "), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer    "), None);
        assert_eq!(bearer_token("Basic abc"), None);
    }
}
