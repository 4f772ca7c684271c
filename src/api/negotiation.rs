//! The response's media type and status, as the GraphQL over HTTP specification has them.
//!
//! A client that asks for `application/graphql-response+json` gets it, and with it status codes
//! that mean something: a request that never ran (it did not parse, validate, or fit the limits)
//! is a 400 without `data`. Everyone else (`application/json`, `*/*`, no `Accept` at all: the
//! clients written before that type existed) gets `application/json` and 200 for every response
//! to a well-formed request, since those clients read errors from the body only. A client that
//! accepts neither gets 406.
use async_graphql::{BatchResponse, Response as GraphQLResponse};
use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Json,
    GraphQLResponse,
}

impl MediaType {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::GraphQLResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// The type the client accepts best, by `q` (a type named with `q=0` is refused even if a
/// wildcard would admit it); between equals, the type it named over one a wildcard admits, and
/// then the legacy one. `None` when it accepts neither.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let ranges: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|range| !range.is_empty())
        .collect();
    if ranges.is_empty() {
        return Some(MediaType::Json);
    }
    let (mut json, mut graphql_response, mut wildcard) = (None, None, None::<f32>);
    for range in ranges {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => &mut graphql_response,
            "application/json" => &mut json,
            "application/*" | "*/*" => &mut wildcard,
            _ => continue,
        };
        *slot = Some(slot.map_or(quality, |seen: f32| seen.max(quality)));
    }
    let named_graphql_response = graphql_response.is_some_and(|quality| quality > 0.0);
    let json = json.or(wildcard).unwrap_or(0.0);
    let graphql_response = graphql_response.or(wildcard).unwrap_or(0.0);
    if json <= 0.0 && graphql_response <= 0.0 {
        None
    } else if graphql_response > json || (graphql_response == json && named_graphql_response) {
        Some(MediaType::GraphQLResponse)
    } else {
        Some(MediaType::Json)
    }
}

/// A request that never ran: no data, and no error that happened at a field (those carry a
/// path). Parse, validation, limit and variable errors are of this kind.
pub fn ran(response: &GraphQLResponse) -> bool {
    !never_ran(response)
}

fn never_ran(response: &GraphQLResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty())
}

/// The response in `media_type`, with its status, cache policy and headers.
pub fn respond(media_type: MediaType, batch: BatchResponse) -> Response {
    let mut status = StatusCode::OK;
    let body = match &batch {
        BatchResponse::Single(response)
            if media_type == MediaType::GraphQLResponse && never_ran(response) =>
        {
            status = StatusCode::BAD_REQUEST;
            serde_json::to_string(&serde_json::json!({ "errors": response.errors }))
        }
        _ => serde_json::to_string(&batch),
    };
    let mut http = match body {
        Ok(body) => Response::new(Body::from(body)),
        Err(error) => {
            tracing::error!(%error, "a GraphQL response did not serialize");
            status = StatusCode::INTERNAL_SERVER_ERROR;
            Response::new(Body::from(
                r#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#,
            ))
        }
    };
    *http.status_mut() = status;
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media_type.content_type()),
    );
    if batch.is_ok()
        && let Some(cache_control) = batch.cache_control().value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        http.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    http.headers_mut().extend(batch.http_headers());
    // The same URL answers in two types: caches must keep them apart.
    http.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(values: &[&'static str]) -> Option<MediaType> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT, HeaderValue::from_static(value));
        }
        negotiate(&headers)
    }

    #[test]
    fn the_client_gets_the_type_it_prefers() {
        use MediaType::*;
        assert_eq!(accepting(&[]), Some(Json));
        assert_eq!(accepting(&["application/json"]), Some(Json));
        assert_eq!(accepting(&["*/*"]), Some(Json));
        assert_eq!(accepting(&[GRAPHQL_RESPONSE_JSON]), Some(GraphQLResponse));
        assert_eq!(
            accepting(&["application/graphql-response+json, application/json;q=0.9"]),
            Some(GraphQLResponse)
        );
        assert_eq!(
            accepting(&["application/graphql-response+json;q=0.5, application/json"]),
            Some(Json)
        );
        assert_eq!(
            accepting(&["text/html", "application/graphql-response+json"]),
            Some(GraphQLResponse)
        );
        assert_eq!(
            accepting(&["application/json;q=0, */*;q=0.1"]),
            Some(GraphQLResponse),
            "a type refused by name stays refused whatever the wildcard admits"
        );
    }

    #[test]
    fn a_client_that_accepts_neither_type_is_told_so() {
        assert_eq!(accepting(&["text/html"]), None);
        assert_eq!(accepting(&["application/xml, text/plain;q=0.5"]), None);
        assert_eq!(accepting(&["application/json;q=0"]), None);
    }
}
