//! Access tokens (HS256 JWTs, pinned) and opaque refresh tokens (random, stored as SHA-256).
use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, AuthFailure};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, access_ttl: Duration) -> Self {
        // Only HS256 is accepted: a token claiming any other algorithm (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            access_ttl,
        }
    }

    /// An access token for the session, living the configured lifetime but never past the
    /// session's own end (`session_ends`): a request then needs no look at the session to know it
    /// has not expired, only whether it was revoked.
    pub fn issue_access_token(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        session_ends: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now,
            exp: now.saturating_add(ttl).min(session_ends.timestamp()),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(AppError::internal)
    }

    /// Checks signature, algorithm, issuer, audience and expiry. Whether the session still lives is
    /// the caller's next step.
    /// A token meant to live longer than this service issues them is refused too: revocations are
    /// only remembered for one token lifetime (`RevokedSessions`).
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, AppError> {
        let claims = decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                AppError::Unauthenticated(match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::TokenExpired,
                    _ => AuthFailure::TokenInvalid,
                })
            })?;
        let longest = i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        if claims.exp.saturating_sub(claims.iat) > longest {
            return Err(AppError::Unauthenticated(AuthFailure::TokenInvalid));
        }
        Ok(claims)
    }
}

/// A new refresh token: 256 random bits, so a plain SHA-256 is a sufficient hash at rest.
pub fn new_refresh_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
