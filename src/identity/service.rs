//! Identity's service functions. Each takes the connection (or transaction) from its caller, so a
//! cross-context step such as registration can run inside one transaction owned by the api layer.
use chrono::{Duration as ChronoDuration, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::Expr,
};
use secrecy::SecretString;
use uuid::Uuid;
use validator::Validate;

use super::{
    Caller, SessionCache, TokenKeys,
    entities::{refresh_token, session, user},
    session_cache::announce_revocation,
    tokens::{hash_refresh_token, new_refresh_token},
};
use crate::error::{AppError, violated_constraint};

/// A registration as the domain sees it: normalised by [`Registration::new`], then validated.
#[derive(Debug, Validate)]
pub struct Registration {
    #[validate(
        length(min = 3, max = 254, message = "must be 3 to 254 characters"),
        email(message = "is not a valid email address")
    )]
    pub email: String,
    #[validate(length(min = 8, max = 128, message = "must be 8 to 128 characters"))]
    password: String,
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub first_name: String,
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub last_name: String,
}

impl Registration {
    /// Trims names, trims and lower-cases the email; the password is kept exactly as typed.
    pub fn new(email: &str, password: String, first_name: &str, last_name: &str) -> Self {
        Self {
            email: normalize_email(email),
            password,
            first_name: first_name.trim().to_string(),
            last_name: last_name.trim().to_string(),
        }
    }

    /// Validates and hands out the password for hashing.
    pub fn into_valid_password(self) -> Result<(ValidRegistration, SecretString), AppError> {
        self.validate()?;
        let password = SecretString::from(self.password);
        Ok((
            ValidRegistration {
                email: self.email,
                first_name: self.first_name,
                last_name: self.last_name,
            },
            password,
        ))
    }
}

/// A registration that passed validation; only it can create a user.
#[derive(Debug)]
pub struct ValidRegistration {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Tokens handed to a client when a session starts or refreshes.
#[derive(Debug)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: Uuid,
}

pub async fn create_user(
    conn: &impl ConnectionTrait,
    registration: &ValidRegistration,
    password_hash: String,
) -> Result<user::Model, AppError> {
    let now = Utc::now();
    let new_user = user::ActiveModel {
        id: Set(Uuid::new_v4()),
        email: Set(Some(registration.email.clone())),
        password_hash: Set(password_hash),
        first_name: Set(registration.first_name.clone()),
        last_name: Set(registration.last_name.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        deactivated_at: Set(None),
    };
    // The unique constraint, not a prior SELECT, decides: two registrations racing for one email
    // cannot both pass.
    user::Entity::insert(new_user)
        .exec_with_returning(conn)
        .await
        .map_err(|error| match violated_constraint(&error).as_deref() {
            Some("users_email_key") => AppError::bad_input("email", "is already registered"),
            _ => error.into(),
        })
}

pub async fn find_active_user(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Option<user::Model>, AppError> {
    Ok(user::Entity::find_by_id(user_id)
        .filter(user::Column::DeactivatedAt.is_null())
        .one(conn)
        .await?)
}

pub async fn find_active_user_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<user::Model>, AppError> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(normalize_email(email)))
        .filter(user::Column::DeactivatedAt.is_null())
        .one(conn)
        .await?)
}

pub async fn find_users(
    conn: &impl ConnectionTrait,
    ids: Vec<Uuid>,
) -> Result<Vec<user::Model>, AppError> {
    Ok(user::Entity::find()
        .filter(user::Column::Id.is_in(ids))
        .all(conn)
        .await?)
}

/// Opens a session for a user who has just proved who they are. Two inserts: run it in a
/// transaction (one commit, one fsync).
pub async fn start_session(
    conn: &impl ConnectionTrait,
    keys: &TokenKeys,
    user_id: Uuid,
    refresh_ttl: std::time::Duration,
) -> Result<SessionTokens, AppError> {
    let now = Utc::now();
    let session_id = Uuid::new_v4();
    let refresh_ttl = ChronoDuration::from_std(refresh_ttl).map_err(AppError::internal)?;
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
        access_token: keys.issue_access_token(user_id, session_id)?,
        refresh_token,
        user_id,
    })
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
pub enum RefreshOutcome {
    Rotated(SessionTokens),
    ReplayDetected { session_id: Uuid },
    Refused,
}

/// Rotates a refresh token. Must run in a transaction: the token row is locked so two concurrent
/// uses of one token cannot both rotate it.
pub async fn rotate_refresh_token(
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
        access_token: keys.issue_access_token(session.user_id, session.id)?,
        refresh_token,
        user_id: session.user_id,
    }))
}

/// Revokes a session and tells every instance to stop trusting it.
pub async fn revoke_session(conn: &impl ConnectionTrait, session_id: Uuid) -> Result<(), AppError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    announce_revocation(conn, format!("session:{session_id}")).await?;
    Ok(())
}

/// Resolves a bearer token to a caller whose session is still open and whose account is active.
pub async fn authenticate(
    conn: &impl ConnectionTrait,
    keys: &TokenKeys,
    sessions: &SessionCache,
    bearer: &str,
) -> Result<Caller, AppError> {
    let claims = keys.verify_access_token(bearer)?;
    let caller = Caller {
        user_id: claims.sub,
        session_id: claims.sid,
    };
    if sessions.is_known_live(caller) {
        return Ok(caller);
    }
    let generation = sessions.generation();
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
        return Err(AppError::Unauthenticated);
    }
    sessions.remember(caller, generation);
    Ok(caller)
}

/// Deactivates an account: personal data scrubbed, every session revoked. The row itself stays so
/// the ledger's history keeps its owner.
pub async fn deactivate_user(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<(), AppError> {
    let now = Utc::now();
    user::Entity::update_many()
        .col_expr(user::Column::Email, Expr::value(Option::<String>::None))
        .col_expr(user::Column::PasswordHash, Expr::value(""))
        .col_expr(user::Column::FirstName, Expr::value("Deleted"))
        .col_expr(user::Column::LastName, Expr::value("user"))
        .col_expr(user::Column::DeactivatedAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    announce_revocation(conn, format!("user:{user_id}")).await?;
    Ok(())
}
