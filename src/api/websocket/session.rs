//! Who a socket was opened for, and when that ends.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::close::{CloseCode, Ending};
use crate::{
    api::request_data,
    error::AppError,
    identity::{Caller, revoked_sessions::Revocation},
    state::AppState,
};

/// The caller a socket was opened for, once `connection_init` was accepted.
pub struct Session {
    pub caller: Caller,
    pub bearer: String,
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// The `connection_init` payload's `authorization` (any case) must be a live `Bearer` token.
    pub async fn open(app: &AppState, payload: Option<&Value>) -> Result<Self, Ending> {
        let authorization = payload
            .and_then(Value::as_object)
            .and_then(|fields| {
                fields
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
            })
            .and_then(|(_, value)| value.as_str());
        let Some(bearer) = authorization.and_then(request_data::bearer_token) else {
            return Err(Ending::Close(
                CloseCode::Unauthorized,
                "Unauthorized: connection_init must carry {\"authorization\": \"Bearer <access token>\"}"
                    .into(),
            ));
        };
        match app.identity.authenticate_until(&app.db, bearer).await {
            Ok((caller, expires_at)) => Ok(Self {
                caller,
                bearer: bearer.to_string(),
                expires_at,
            }),
            Err(AppError::Unauthenticated(_)) => Err(Ending::Close(
                CloseCode::Forbidden,
                "Forbidden: the access token is invalid, expired or revoked".into(),
            )),
            Err(error) => {
                tracing::warn!(%error, "cannot authenticate a WebSocket");
                Err(Ending::Close(
                    CloseCode::TryAgainLater,
                    "cannot check the token now; try again".into(),
                ))
            }
        }
    }

    /// Whether a revocation ends this socket's session. When revocations may have been missed
    /// (`Everything`, or this receiver fell behind), the database decides.
    pub async fn ended_by(
        &self,
        app: &AppState,
        revocation: Result<Revocation, RecvError>,
    ) -> bool {
        match revocation {
            Ok(Revocation::Session(id)) => id == self.caller.session_id,
            Ok(Revocation::User(id)) => id == self.caller.user_id.0,
            Ok(Revocation::Everything) | Err(RecvError::Lagged(_)) => {
                // Every socket of the instance asks at once: spread them over a second.
                let jitter = Duration::from_millis(rand::random_range(0..1000));
                tokio::time::sleep(jitter).await;
                matches!(
                    app.identity.authenticate(&app.db, &self.bearer).await,
                    Err(AppError::Unauthenticated(_))
                )
            }
            Err(RecvError::Closed) => false,
        }
    }
}
