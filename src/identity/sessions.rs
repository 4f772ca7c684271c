//! Sessions: signing in, refreshing, signing out, and resolving a bearer token to its caller.
use std::{net::IpAddr, time::Duration};

use crate::db::Database;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::Expr,
};
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    Caller, LoginThrottle, PasswordHasher, RevokedSessions, TokenKeys,
    entities::{refresh_token, session, user},
    revoked_sessions::Revocation,
    tokens::{hash_refresh_token, new_refresh_token},
    users::{find_active_user, find_active_user_by_email, normalize_email},
};
use crate::{
    config::Config,
    error::{AppError, AuthFailure},
    metrics::Metrics,
};

/// Identity's run-time services, built once per instance: token keys, password hashing, login
/// throttling and the sessions revoked lately.
pub struct Identity {
    pub keys: TokenKeys,
    pub hasher: PasswordHasher,
    pub throttle: LoginThrottle,
    pub sessions: RevokedSessions,
    refresh_token_ttl: Duration,
}

/// A signed-in user and the tokens of their new session.
pub struct SignedIn {
    pub tokens: SessionTokens,
    pub user: user::Model,
}

impl Identity {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            keys: TokenKeys::new(
                config.jwt_secret(),
                &config.auth.jwt_issuer,
                &config.auth.jwt_audience,
                config.auth.access_token_ttl,
            ),
            hasher: PasswordHasher::new(config.auth.password_hashing_concurrency.get())?,
            throttle: LoginThrottle::new(
                config.auth.login_attempts_per_address_per_minute.get(),
                config.auth.login_attempts_per_account_per_minute.get(),
            ),
            sessions: RevokedSessions::new(config.auth.access_token_ttl),
            refresh_token_ttl: config.auth.refresh_token_ttl,
        })
    }

    /// Opens a session for a user who has just proved who they are (or just registered), inside
    /// the caller's transaction (two inserts: one commit, one fsync).
    pub async fn start_session(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<SessionTokens, AppError> {
        let now = Utc::now();
        let session_id = Uuid::new_v4();
        let refresh_ttl =
            ChronoDuration::from_std(self.refresh_token_ttl).map_err(AppError::internal)?;
        session::Entity::insert(session::ActiveModel {
            id: Set(session_id),
            user_id: Set(user_id),
            created_at: Set(now),
            expires_at: Set(now + refresh_ttl),
            revoked_at: Set(None),
        })
        .exec_without_returning(conn)
        .await?;
        let refresh_token = insert_refresh_token(conn, session_id).await?;
        Ok(SessionTokens {
            access_token: self
                .keys
                .issue_access_token(user_id, session_id, now + refresh_ttl)?,
            refresh_token,
            user_id,
        })
    }

    /// Checks the password (against a decoy hash when the email is unknown, so both failures take
    /// as long) and opens a session.
    pub async fn log_in(
        &self,
        db: &Database,
        metrics: &Metrics,
        email: &str,
        password: SecretString,
        client_ip: IpAddr,
    ) -> Result<SignedIn, AppError> {
        let email = normalize_email(email);
        self.throttle.check(&email, client_ip)?;
        let user = find_active_user_by_email(db, &email).await?;
        let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
        let password_matches = self.hasher.verify(password, stored_hash).await?;
        let user = user
            .filter(|_| password_matches)
            .ok_or(AppError::InvalidCredentials)?;
        // Only the session's transaction runs again after a deadlock: the password was checked.
        let tokens = crate::db::retrying(metrics, || async {
            let txn = crate::db::begin(db, metrics).await?;
            let tokens = self.start_session(&txn, user.id).await?;
            txn.commit().await?;
            Ok(tokens)
        })
        .await?;
        Ok(SignedIn { tokens, user })
    }

    /// Exchanges a refresh token for new tokens; a replayed one ends its session everywhere.
    pub async fn refresh_session(
        &self,
        db: &Database,
        metrics: &Metrics,
        presented: &str,
    ) -> Result<SignedIn, AppError> {
        let outcome = crate::db::retrying(metrics, || async {
            let txn = crate::db::begin(db, metrics).await?;
            let outcome = rotate_refresh_token(&txn, &self.keys, presented).await?;
            // Committed whatever the outcome: a detected replay must leave its session revoked.
            txn.commit().await?;
            Ok(outcome)
        })
        .await?;
        match outcome {
            RefreshOutcome::Rotated(tokens) => {
                let user = find_active_user(db, tokens.user_id)
                    .await?
                    .ok_or(AppError::Unauthenticated(AuthFailure::SessionRevoked))?;
                Ok(SignedIn { tokens, user })
            }
            RefreshOutcome::ReplayDetected { session_id } => {
                self.sessions.evict_session(session_id);
                Err(AppError::Unauthenticated(AuthFailure::SessionRevoked))
            }
            RefreshOutcome::Refused => Err(AppError::Unauthenticated(AuthFailure::TokenInvalid)),
        }
    }

    /// Ends the caller's session at once on every instance.
    pub async fn log_out(&self, db: &Database, caller: Caller) -> Result<(), AppError> {
        revoke_session(db, caller.session_id).await?;
        // Other instances learn it from the notification; this one must not wait for it.
        self.sessions.evict_session(caller.session_id);
        Ok(())
    }

    /// Confirms a signed-in user's password (for sensitive steps such as deleting the account).
    /// Throttled exactly like a login: whoever holds a stolen access token must not be able to
    /// guess the password faster here than there.
    pub async fn confirm_password(
        &self,
        db: &Database,
        user_id: Uuid,
        password: SecretString,
        client_ip: IpAddr,
    ) -> Result<(), AppError> {
        let user = find_active_user(db, user_id)
            .await?
            .ok_or(AppError::Unauthenticated(AuthFailure::SessionRevoked))?;
        // An active user always has an email; the id would key the throttle just as well.
        let account = user.email.clone().unwrap_or_else(|| user.id.to_string());
        self.throttle.check(&account, client_ip)?;
        if self
            .hasher
            .verify(password, Some(user.password_hash))
            .await?
        {
            Ok(())
        } else {
            Err(AppError::InvalidCredentials)
        }
    }

    /// Resolves a bearer token to a caller whose session is still open and whose account is active.
    pub async fn authenticate(
        &self,
        conn: &impl ConnectionTrait,
        bearer: &str,
    ) -> Result<Caller, AppError> {
        self.authenticate_until(conn, bearer)
            .await
            .map(|(caller, _)| caller)
    }

    /// [`Self::authenticate`], and when the access token expires: what holds a session open past
    /// one request (a WebSocket) must end by then.
    pub async fn authenticate_until(
        &self,
        conn: &impl ConnectionTrait,
        bearer: &str,
    ) -> Result<(Caller, DateTime<Utc>), AppError> {
        let claims = self.keys.verify_access_token(bearer)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0)
            .ok_or(AppError::Unauthenticated(AuthFailure::TokenInvalid))?;
        let caller = Caller {
            user_id: crate::domain::UserId(claims.sub),
            session_id: claims.sid,
        };
        match self.sessions.knows(caller) {
            Some(true) => return Ok((caller, expires_at)),
            Some(false) => return Err(AppError::Unauthenticated(AuthFailure::SessionRevoked)),
            None => {}
        }
        let live = session::Entity::find_by_id(claims.sid)
            .filter(session::Column::UserId.eq(claims.sub))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(Utc::now()))
            .select_only()
            .column(session::Column::Id)
            .into_tuple::<Uuid>()
            .one(conn)
            .await?
            .is_some();
        if !live {
            return Err(AppError::Unauthenticated(AuthFailure::SessionRevoked));
        }
        Ok((caller, expires_at))
    }
}

/// Tokens handed to a client when a session starts or refreshes.
#[derive(Debug)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: Uuid,
}

async fn insert_refresh_token(
    conn: &impl ConnectionTrait,
    session_id: Uuid,
) -> Result<String, AppError> {
    let token = new_refresh_token();
    refresh_token::Entity::insert(refresh_token::ActiveModel {
        token_hash: Set(hash_refresh_token(&token)),
        session_id: Set(session_id),
        created_at: Set(Utc::now()),
        rotated_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(token)
}

/// What presenting a refresh token led to. A replay is not an error to roll back: revoking the
/// session must be committed even though the client is refused.
enum RefreshOutcome {
    Rotated(SessionTokens),
    ReplayDetected { session_id: Uuid },
    Refused,
}

/// Rotates a refresh token. Must run in a transaction: the token row is locked so two concurrent
/// uses of one token cannot both rotate it.
async fn rotate_refresh_token(
    conn: &impl ConnectionTrait,
    keys: &TokenKeys,
    presented: &str,
) -> Result<RefreshOutcome, AppError> {
    // Locked so that of two concurrent uses of one token, the second sees it rotated (a replay).
    let Some(token) = refresh_token::Entity::find_by_id(hash_refresh_token(presented))
        .lock_exclusive()
        .one(conn)
        .await?
    else {
        return Ok(RefreshOutcome::Refused);
    };
    let Some(session) = session::Entity::find_by_id(token.session_id)
        .one(conn)
        .await?
    else {
        return Ok(RefreshOutcome::Refused);
    };
    let now = Utc::now();
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Ok(RefreshOutcome::Refused);
    }
    if token.rotated_at.is_some() {
        revoke_session(conn, session.id).await?;
        return Ok(RefreshOutcome::ReplayDetected {
            session_id: session.id,
        });
    }
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(token.token_hash))
        .exec(conn)
        .await?;
    let refresh_token = insert_refresh_token(conn, session.id).await?;
    Ok(RefreshOutcome::Rotated(SessionTokens {
        access_token: keys.issue_access_token(session.user_id, session.id, session.expires_at)?,
        refresh_token,
        user_id: session.user_id,
    }))
}

/// Revokes a session and tells every instance to stop trusting it.
async fn revoke_session(conn: &impl ConnectionTrait, session_id: Uuid) -> Result<(), AppError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Revocation::Session(session_id).announce(conn).await?;
    Ok(())
}
