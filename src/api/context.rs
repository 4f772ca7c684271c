//! What resolvers get from the context: shared services, the request's client and caller, and the
//! mapping from [`AppError`] to GraphQL errors with a stable `extensions.code`.
use std::{net::IpAddr, sync::Arc};

use async_graphql::{Context, ErrorExtensions};
use tokio::sync::OnceCell;

use crate::{
    error::{AppError, AuthFailure},
    identity::Caller,
    state::AppState,
};

/// Per-request data: who is asking, from where. The caller is resolved at most once per request.
pub struct RequestContext {
    pub bearer: Option<String>,
    pub client_ip: IpAddr,
    caller: OnceCell<Result<Caller, AuthFailure>>,
}

impl RequestContext {
    pub fn new(bearer: Option<String>, client_ip: IpAddr) -> Self {
        Self {
            bearer,
            client_ip,
            caller: OnceCell::new(),
        }
    }
}

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a Arc<AppState>, AppError> {
    ctx.data::<Arc<AppState>>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("AppState missing from the schema")))
}

pub fn request<'a>(ctx: &Context<'a>) -> Result<&'a RequestContext, AppError> {
    ctx.data::<RequestContext>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("RequestContext missing from the request")))
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub async fn caller(ctx: &Context<'_>) -> Result<Caller, AppError> {
    let state = state(ctx)?;
    let request = request(ctx)?;
    let caller = request
        .caller
        .get_or_try_init(|| async {
            let Some(bearer) = request.bearer.as_deref() else {
                return Ok(Err(AuthFailure::Missing));
            };
            match state.identity.authenticate(&state.db, bearer).await {
                Ok(caller) => {
                    // The request's log lines name whose they are (an id: never the token).
                    tracing::Span::current()
                        .record("user_id", tracing::field::display(caller.user_id));
                    Ok(Ok(caller))
                }
                Err(AppError::Unauthenticated(reason)) => Ok(Err(reason)),
                Err(other) => Err(other),
            }
        })
        .await?;
    caller.map_err(AppError::Unauthenticated)
}

/// The error type of every resolver. It deliberately does not implement `Display`, so async-graphql's
/// catch-all conversion (which would copy any message, SQL included, to the client) cannot apply:
/// every error reaches the client through [`AppError`] and its stable code.
#[derive(Debug, Clone)]
pub struct ApiError(async_graphql::Error);

impl From<ApiError> for async_graphql::Error {
    fn from(ApiError(error): ApiError) -> Self {
        error
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(error: sea_orm::DbErr) -> Self {
        AppError::from(error).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        if let AppError::Internal(source) = &error {
            // The request id is on the enclosing span; the client sees only the generic message.
            tracing::error!(error = ?source, "internal error");
        }
        Self(
            async_graphql::Error::new(error.to_string()).extend_with(|_, extensions| {
                extensions.set("code", error.code().as_str());
                match &error {
                    AppError::BadUserInput { fields } => {
                        let fields: async_graphql::indexmap::IndexMap<
                            async_graphql::Name,
                            async_graphql::Value,
                        > = fields
                            .iter()
                            .map(|(field, messages)| {
                                (
                                    async_graphql::Name::new(field),
                                    async_graphql::Value::List(
                                        messages.iter().map(|m| m.as_str().into()).collect(),
                                    ),
                                )
                            })
                            .collect();
                        extensions.set("fields", async_graphql::Value::Object(fields));
                    }
                    AppError::InsufficientMinutes {
                        requested,
                        available,
                    } => {
                        extensions.set("requested", requested.0);
                        extensions.set("available", available.0);
                    }
                    AppError::Unauthenticated(reason) => {
                        extensions.set("reason", reason.as_str());
                    }
                    AppError::RateLimited { retry_after_secs } => {
                        extensions.set("retryAfterSeconds", *retry_after_secs);
                    }
                    AppError::Contention(_) | AppError::Unavailable => {
                        extensions.set("retryable", true)
                    }
                    _ => {}
                }
            }),
        )
    }
}
