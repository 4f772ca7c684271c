//! Errors answered outside a resolver (the transport, the limits, a refused persisted query), in
//! the GraphQL error shape, each with a code from [`ErrorCode`].
use async_graphql::{Response, ServerError};
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
};

pub use crate::error::ErrorCode;

pub const TOO_LARGE: &str = "the request body is larger than this server accepts";

/// A GraphQL error carrying `code`.
pub fn server_error(code: ErrorCode, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    error
}

/// A response of one error, with its status, for a request that never ran.
pub fn coded_error(status: StatusCode, code: ErrorCode, message: &str) -> axum::response::Response {
    (
        status,
        Json(Response::from_errors(vec![server_error(code, message)])),
    )
        .into_response()
}

/// A request that is not GraphQL at all (or not one this server reads): `BAD_REQUEST`.
pub fn transport_error(status: StatusCode, message: &str) -> axum::response::Response {
    coded_error(status, ErrorCode::BadRequest, message)
}

pub fn not_acceptable() -> axum::response::Response {
    transport_error(
        StatusCode::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
}

pub fn mutation_over_get() -> axum::response::Response {
    let mut response = coded_error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadUserInput,
        "mutations are only accepted with POST",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Errors raised by async-graphql while running an operation (an argument it cannot read) carry
/// no code; they are the client's to fix. Parsing, validation and the limits got theirs from
/// [`super::limits`].
pub fn with_error_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    response
}

/// The code an error carries; one without is the client's (see [`with_error_codes`]).
pub fn error_code(error: &ServerError) -> ErrorCode {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("code"))
        .and_then(|code| match code {
            async_graphql::Value::String(code) => ErrorCode::parse(code),
            _ => None,
        })
        .unwrap_or(ErrorCode::BadUserInput)
}
