//! The one error type of the service. Each variant is a code clients can rely on
//! (`extensions.code` in GraphQL); anything unexpected becomes `Internal` and is only described in logs.
use std::{collections::BTreeMap, ops::Deref};

use sea_orm::{DbErr, RuntimeErr};

pub type FieldErrors = BTreeMap<String, Vec<String>>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `UNAUTHENTICATED`: no valid access token, or its session has ended; the reason tells a
    /// client whether refreshing can help.
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    /// `FORBIDDEN`: authenticated, but this caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// `BAD_USER_INPUT`: the input breaks a rule; `fields` says which and why.
    #[error("invalid input")]
    BadUserInput { fields: FieldErrors },
    /// `INVALID_CREDENTIALS`: the same for an unknown email and a wrong password.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// `INSUFFICIENT_MINUTES`
    #[error("not enough minutes: {requested} requested, {available} available")]
    InsufficientMinutes {
        requested: crate::domain::Minutes,
        available: crate::domain::Minutes,
    },
    /// `NOT_FOUND`
    #[error("{0} not found")]
    NotFound(&'static str),
    /// `CONFLICT`: the thing is in a state that forbids this.
    #[error("{0}")]
    Conflict(&'static str),
    /// `CONFLICT` with `retryable: true`: a lock wait, deadlock or timeout; the same call may succeed.
    #[error("the operation collided with a concurrent one; retry it")]
    Contention(Contention),
    /// `INTERNAL` with `retryable: true`: the database connection was lost or the pool is exhausted;
    /// the transaction was rolled back, so the same call may be retried.
    #[error("the service is temporarily unavailable; retry")]
    Unavailable,
    /// `CURSOR_EXPIRED`: a subscription's cursor points before what the log still keeps; refetch
    /// by query and subscribe without one.
    #[error("the cursor is older than the event log keeps: refetch, then subscribe without it")]
    CursorExpired,
    /// `RATE_LIMITED`
    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// `INTERNAL`: details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why a caller is not authenticated, as `extensions.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials were sent.
    Missing,
    /// The access token is genuine but past its expiry: refresh the session.
    TokenExpired,
    /// The token is malformed, forged, or for another issuer or audience: sign in again.
    TokenInvalid,
    /// The session behind the token (or the refresh token) has ended: logged out, replaced, or
    /// the account was deleted. Sign in again.
    SessionRevoked,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "MISSING",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::SessionRevoked => "SESSION_REVOKED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "authentication required",
            Self::TokenExpired => "the access token expired: refresh the session",
            Self::TokenInvalid => "the token is not valid: sign in again",
            Self::SessionRevoked => "the session has ended: sign in again",
        }
    }
}

/// Every code a client can find in `extensions.code`: the domain's (from [`AppError`]) and those
/// the API answers before or around a resolver (transport, parsing, validation, limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not a GraphQL request at all: an unreadable body or query string, no query, an empty batch,
    /// a media type the service does not speak.
    BadRequest,
    BadUserInput,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    /// Over a limit: depth, complexity, aliases, batch length.
    QueryTooComplex,
    /// A hash-only persisted query this instance does not know: send the document with its hash
    /// (unless only trusted documents run).
    PersistedQueryNotFound,
    /// With trusted documents, a document that is not one of them.
    PersistedQueryNotInList,
    Unauthenticated,
    Forbidden,
    InvalidCredentials,
    InsufficientMinutes,
    NotFound,
    Conflict,
    CursorExpired,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 16] = [
        Self::BadRequest,
        Self::BadUserInput,
        Self::GraphqlParseFailed,
        Self::GraphqlValidationFailed,
        Self::QueryTooComplex,
        Self::PersistedQueryNotFound,
        Self::PersistedQueryNotInList,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::InvalidCredentials,
        Self::InsufficientMinutes,
        Self::NotFound,
        Self::Conflict,
        Self::CursorExpired,
        Self::RateLimited,
        Self::Internal,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotInList => "PERSISTED_QUERY_NOT_IN_LIST",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::InsufficientMinutes => "INSUFFICIENT_MINUTES",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::RateLimited => "RATE_LIMITED",
            Self::Internal => "INTERNAL",
        }
    }

    /// The code a response's error carries, read back.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AppError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::InsufficientMinutes { .. } => ErrorCode::InsufficientMinutes,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) | Self::Contention(_) => ErrorCode::Conflict,
            Self::CursorExpired => ErrorCode::CursorExpired,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Internal(_) | Self::Unavailable => ErrorCode::Internal,
        }
    }

    pub fn bad_input(field: &str, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            fields: BTreeMap::from([(field.to_string(), vec![message.into()])]),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<DbErr> for AppError {
    fn from(error: DbErr) -> Self {
        if let Some(contention) = Contention::of(&error) {
            return Self::Contention(contention);
        }
        if is_unavailability(&error) {
            tracing::warn!(%error, "database unavailable");
            return Self::Unavailable;
        }
        Self::Internal(error.into())
    }
}

impl From<validator::ValidationErrors> for AppError {
    fn from(errors: validator::ValidationErrors) -> Self {
        let mut fields = FieldErrors::new();
        collect_validation_errors(&errors, "", &mut fields);
        Self::BadUserInput { fields }
    }
}

fn collect_validation_errors(
    errors: &validator::ValidationErrors,
    prefix: &str,
    into: &mut FieldErrors,
) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        let name = to_camel_case(field);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                let messages = into.entry(path).or_default();
                messages.extend(list.iter().map(|error| match &error.message {
                    Some(message) => message.to_string(),
                    None => error.code.to_string(),
                }));
            }
            ValidationErrorsKind::Struct(nested) => collect_validation_errors(nested, &path, into),
            ValidationErrorsKind::List(items) => {
                for (index, nested) in items {
                    collect_validation_errors(nested, &format!("{path}.{index}"), into);
                }
            }
        }
    }
}

/// Field names in errors use the GraphQL spelling the client sent.
fn to_camel_case(snake: &str) -> String {
    let mut result = String::with_capacity(snake.len());
    let mut upper_next = false;
    for character in snake.chars() {
        if character == '_' {
            upper_next = true;
        } else if upper_next {
            result.extend(character.to_uppercase());
            upper_next = false;
        } else {
            result.push(character);
        }
    }
    result
}

/// The SQLSTATE of a database error, if the error came from PostgreSQL.
pub fn sqlstate(error: &DbErr) -> Option<String> {
    database_error(error).and_then(|db| db.code().map(|code| code.into_owned()))
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(error: &DbErr) -> Option<String> {
    database_error(error).and_then(|db| db.constraint().map(str::to_owned))
}

fn database_error(error: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    match statement_error(error)? {
        sea_orm::sqlx::Error::Database(db) => Some(db.as_ref()),
        _ => None,
    }
}

/// What sqlx said when a statement failed (not when getting a connection did).
fn statement_error(error: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
            Some(inner.deref())
        }
        _ => None,
    }
}

/// The server ended the session under a statement (`08...` connection exceptions, `57P...`
/// shutdowns and terminations).
fn session_ended(error: &DbErr) -> bool {
    sqlstate(error).is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
}

/// Why PostgreSQL stopped a statement that others got in the way of: a retry may well succeed, so
/// clients get a retryable `CONFLICT` rather than `INTERNAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    /// `lock_timeout` passed waiting for a row lock.
    LockTimeout,
    Deadlock,
    SerializationFailure,
    /// `statement_timeout`, or `idle_in_transaction_session_timeout`.
    Timeout,
}

impl Contention {
    pub fn of(error: &DbErr) -> Option<Self> {
        Some(match sqlstate(error).as_deref()? {
            "55P03" => Self::LockTimeout,
            "40P01" => Self::Deadlock,
            "40001" => Self::SerializationFailure,
            "57014" | "25P03" => Self::Timeout,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LockTimeout => "lock_timeout",
            Self::Deadlock => "deadlock",
            Self::SerializationFailure => "serialization_failure",
            Self::Timeout => "timeout",
        }
    }

    /// PostgreSQL rolled the transaction back because of how it interleaved with another at that
    /// moment, and the other has gone on: running it again is the usual remedy, and the caller
    /// need not know. Not so after a timeout: whatever held the lock that long is likely still
    /// there, and the client should decide.
    pub fn worth_running_again(self) -> bool {
        matches!(self, Self::Deadlock | Self::SerializationFailure)
    }
}

/// A statement failed because its pooled connection had died (closed by a restart or
/// `pg_terminate_backend` while it sat in the pool). Only for a transaction's `BEGIN` does that
/// mean nothing ran: never read it as "safe to retry" elsewhere (at `COMMIT` the outcome is
/// unknown). Failing to get a connection at all (`DbErr::Conn`, `ConnectionAcquire`: refused,
/// unreachable, pool exhausted) is not this: trying again at once would only hammer the server.
pub fn is_lost_connection(error: &DbErr) -> bool {
    session_ended(error)
        || statement_error(error).is_some_and(|inner| {
            matches!(
                inner,
                sea_orm::sqlx::Error::Io(_) | sea_orm::sqlx::Error::Protocol(_)
            )
        })
}

/// A lost or refused connection (server restart, `pg_terminate_backend`, network), or no free
/// connection in the pool: nothing was committed, and a retry may succeed.
pub fn is_unavailability(error: &DbErr) -> bool {
    matches!(error, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
        || session_ended(error)
        || statement_error(error).is_some_and(|inner| {
            matches!(
                inner,
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
                    | sea_orm::sqlx::Error::WorkerCrashed
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` is the list a response's code is read back against: a code missing from it would be
    /// miscounted. The match is exhaustive, so a new variant must be numbered here, and then the
    /// numbering holds only if it is in `ALL` too.
    #[test]
    fn every_error_code_is_listed_once_and_reads_back() {
        let number = |code: ErrorCode| match code {
            ErrorCode::BadRequest => 0,
            ErrorCode::BadUserInput => 1,
            ErrorCode::GraphqlParseFailed => 2,
            ErrorCode::GraphqlValidationFailed => 3,
            ErrorCode::QueryTooComplex => 4,
            ErrorCode::PersistedQueryNotFound => 5,
            ErrorCode::PersistedQueryNotInList => 6,
            ErrorCode::Unauthenticated => 7,
            ErrorCode::Forbidden => 8,
            ErrorCode::InvalidCredentials => 9,
            ErrorCode::InsufficientMinutes => 10,
            ErrorCode::NotFound => 11,
            ErrorCode::Conflict => 12,
            ErrorCode::CursorExpired => 13,
            ErrorCode::RateLimited => 14,
            ErrorCode::Internal => 15,
        };
        let numbers: Vec<usize> = ErrorCode::ALL.into_iter().map(number).collect();
        assert_eq!(numbers, (0..16).collect::<Vec<_>>());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn every_error_code_is_in_the_api_docs_list() {
        let docs = include_str!("../docs/api.md");
        let errors = docs
            .split("## Errors")
            .nth(1)
            .and_then(|section| section.split("\n## ").next())
            .unwrap_or_default();
        for code in ErrorCode::ALL {
            assert!(
                errors.contains(&format!("- `{}`", code.as_str()))
                    || errors.contains(&format!(", `{}`", code.as_str())),
                "{code} is not listed under docs/api.md's Errors"
            );
        }
    }

    #[test]
    fn field_names_are_reported_in_camel_case() {
        assert_eq!(to_camel_case("first_name"), "firstName");
        assert_eq!(to_camel_case("email"), "email");
    }
}
