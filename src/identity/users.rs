//! Users: registration, look-ups and deactivation. Each function takes the connection (or
//! transaction) from its caller, so registration can run inside one transaction owned by the api
//! layer together with the ledger's opening balance.
use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use secrecy::SecretString;
use uuid::Uuid;
use validator::Validate;

use super::{
    entities::{session, user},
    revoked_sessions::Revocation,
};
use crate::{
    error::{AppError, AuthFailure, violated_constraint},
    events::{
        self,
        catalogue::{UserDeactivated, UserRegistered},
    },
};

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
    let user = user::Entity::insert(new_user)
        .exec_with_returning(conn)
        .await
        .map_err(|error| match violated_constraint(&error).as_deref() {
            Some("users_email_key") => AppError::bad_input("email", "is already registered"),
            _ => error.into(),
        })?;
    events::record(conn, &UserRegistered { user_id: user.id }).await?;
    Ok(user)
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

/// Deactivates an account: personal data scrubbed, every session revoked. The row itself stays so
/// the ledger's history keeps its owner.
pub async fn deactivate_user(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<(), AppError> {
    let now = Utc::now();
    let deactivated = user::Entity::update_many()
        .col_expr(user::Column::Email, Expr::value(Option::<String>::None))
        .col_expr(user::Column::PasswordHash, Expr::value(""))
        .col_expr(user::Column::FirstName, Expr::value("Deleted"))
        .col_expr(user::Column::LastName, Expr::value("user"))
        .col_expr(user::Column::DeactivatedAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::DeactivatedAt.is_null())
        .exec(conn)
        .await?;
    // A second deletion racing the first waited on its row lock and finds it done.
    if deactivated.rows_affected == 0 {
        return Err(AppError::Unauthenticated(AuthFailure::SessionRevoked));
    }
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Revocation::User(user_id).announce(conn).await?;
    events::record(conn, &UserDeactivated { user_id }).await?;
    Ok(())
}
