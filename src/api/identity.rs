//! GraphQL for identity: registration, sessions, the account, and the `User` type.
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use sea_orm::TransactionTrait;
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    context::{ApiResult, AppState, caller, request, state},
    loaders::{BalanceKey, OutstandingKey, loader},
};
use crate::{
    error::AppError,
    identity::{self, RefreshOutcome, Registration, SessionTokens, entities::user},
    ledger, visits,
};

#[derive(InputObject)]
pub struct RegisterInput {
    /// 3 to 254 characters; stored trimmed and lower-cased, unique regardless of case.
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    /// 1 to 100 characters after trimming.
    pub first_name: String,
    /// 1 to 100 characters after trimming.
    pub last_name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct RefreshSessionInput {
    /// The refresh token from the latest `AuthPayload`; each one works once.
    pub refresh_token: String,
}

#[derive(InputObject)]
pub struct DeleteAccountInput {
    /// The current password, to confirm.
    pub password: String,
}

/// A new access token and refresh token, and who they belong to.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`; valid for 15 minutes.
    pub access_token: String,
    /// Exchange with `refreshSession` for new tokens; rotated on every use.
    pub refresh_token: String,
    pub user: User,
}

/// A person using the service, as a member, a pal, or both.
pub struct User {
    pub model: user::Model,
    /// Whether the viewer is this user: only they see their email and minutes.
    pub viewer_is_self: bool,
}

impl User {
    pub fn new(model: user::Model, viewer: Option<Uuid>) -> Self {
        let viewer_is_self = viewer == Some(model.id);
        Self {
            model,
            viewer_is_self,
        }
    }
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    /// Only visible to the user themself; `null` for everyone else and for deleted accounts.
    async fn email(&self) -> Option<&str> {
        self.viewer_is_self
            .then_some(self.model.email.as_deref())
            .flatten()
    }

    async fn first_name(&self) -> &str {
        &self.model.first_name
    }

    async fn last_name(&self) -> &str {
        &self.model.last_name
    }

    /// The user's balance of minutes. Only visible to the user themself.
    async fn minutes(&self, ctx: &Context<'_>) -> ApiResult<Option<i32>> {
        if !self.viewer_is_self {
            return Ok(None);
        }
        Ok(loader(ctx).load_one(BalanceKey(self.model.id)).await?)
    }

    /// Minutes held by the user's requested and accepted visits. Only visible to the user themself.
    async fn outstanding_minutes(&self, ctx: &Context<'_>) -> ApiResult<Option<i32>> {
        if !self.viewer_is_self {
            return Ok(None);
        }
        Ok(loader(ctx).load_one(OutstandingKey(self.model.id)).await?)
    }

    /// Minutes the user can still book: `minutes - outstandingMinutes`. Only visible to the user themself.
    async fn available_minutes(&self, ctx: &Context<'_>) -> ApiResult<Option<i32>> {
        if !self.viewer_is_self {
            return Ok(None);
        }
        let loader = loader(ctx);
        let balance = loader
            .load_one(BalanceKey(self.model.id))
            .await?
            .unwrap_or(0);
        let outstanding = loader
            .load_one(OutstandingKey(self.model.id))
            .await?
            .unwrap_or(0);
        Ok(Some(balance - outstanding))
    }
}

#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let caller = caller(ctx).await?;
        let model = identity::find_active_user(&state(ctx)?.db, caller.user_id)
            .await?
            .ok_or(AppError::Unauthenticated)?;
        Ok(User::new(model, Some(caller.user_id)))
    }
}

#[derive(Default)]
pub struct IdentityMutation;

#[Object]
impl IdentityMutation {
    /// Creates an account with the starting budget of minutes and signs it in.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> ApiResult<AuthPayload> {
        Ok(register_account(state(ctx)?, input).await?)
    }

    /// Signs in. Unknown email and wrong password give the same `INVALID_CREDENTIALS`.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> ApiResult<AuthPayload> {
        let client_ip = request(ctx)?.client_ip;
        Ok(log_in(state(ctx)?, input, client_ip).await?)
    }

    /// Exchanges a refresh token for new tokens. Presenting an already-used token ends the session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        input: RefreshSessionInput,
    ) -> ApiResult<AuthPayload> {
        Ok(refresh_session(state(ctx)?, &input.refresh_token).await?)
    }

    /// Ends the current session at once: its access and refresh tokens stop working.
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let caller = caller(ctx).await?;
        let state = state(ctx)?;
        identity::revoke_session(&state.db, caller.session_id).await?;
        // Other instances learn it from the notification; this one must not wait for it.
        state
            .sessions
            .evict(&format!("session:{}", caller.session_id));
        Ok(true)
    }

    /// Deactivates the account: personal data is scrubbed and sessions end; ledger history stays.
    async fn delete_account(
        &self,
        ctx: &Context<'_>,
        input: DeleteAccountInput,
    ) -> ApiResult<bool> {
        let caller = caller(ctx).await?;
        delete_account(state(ctx)?, caller.user_id, input.password).await?;
        Ok(true)
    }
}

/// Registration spans two contexts (a user and their balance), so it is orchestrated here, in one
/// transaction.
async fn register_account(state: &AppState, input: RegisterInput) -> Result<AuthPayload, AppError> {
    let (registration, password) = Registration::new(
        &input.email,
        input.password,
        &input.first_name,
        &input.last_name,
    )
    .into_valid_password()?;
    let password_hash = state.hasher.hash(password).await?;
    let txn = state.db.begin().await?;
    let user = identity::create_user(&txn, &registration, password_hash).await?;
    ledger::open_balance(&txn, user.id, state.config.starting_minutes).await?;
    let tokens =
        identity::start_session(&txn, &state.keys, user.id, state.config.refresh_token_ttl).await?;
    txn.commit().await?;
    Ok(auth_payload(tokens, user))
}

async fn log_in(
    state: &AppState,
    input: LoginInput,
    client_ip: std::net::IpAddr,
) -> Result<AuthPayload, AppError> {
    let email = identity::normalize_email(&input.email);
    state.throttle.check(&email, client_ip)?;
    let user = identity::find_active_user_by_email(&state.db, &email).await?;
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let password_matches = state
        .hasher
        .verify(SecretString::from(input.password), stored_hash)
        .await?;
    let user = user
        .filter(|_| password_matches)
        .ok_or(AppError::InvalidCredentials)?;
    let txn = state.db.begin().await?;
    let tokens =
        identity::start_session(&txn, &state.keys, user.id, state.config.refresh_token_ttl).await?;
    txn.commit().await?;
    Ok(auth_payload(tokens, user))
}

async fn refresh_session(state: &AppState, presented: &str) -> Result<AuthPayload, AppError> {
    let txn = state.db.begin().await?;
    let outcome = identity::rotate_refresh_token(&txn, &state.keys, presented).await?;
    // Committed whatever the outcome: a detected replay must leave its session revoked.
    txn.commit().await?;
    match outcome {
        RefreshOutcome::Rotated(tokens) => {
            let user = identity::find_active_user(&state.db, tokens.user_id)
                .await?
                .ok_or(AppError::Unauthenticated)?;
            Ok(auth_payload(tokens, user))
        }
        RefreshOutcome::ReplayDetected { session_id } => {
            state.sessions.evict(&format!("session:{session_id}"));
            Err(AppError::Unauthenticated)
        }
        RefreshOutcome::Refused => Err(AppError::Unauthenticated),
    }
}

async fn delete_account(state: &AppState, user_id: Uuid, password: String) -> Result<(), AppError> {
    let user = identity::find_active_user(&state.db, user_id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let password_matches = state
        .hasher
        .verify(SecretString::from(password), Some(user.password_hash))
        .await?;
    if !password_matches {
        return Err(AppError::InvalidCredentials);
    }
    let txn = state.db.begin().await?;
    identity::deactivate_user(&txn, user_id).await?;
    visits::withdraw_user(&txn, user_id).await?;
    txn.commit().await?;
    state.sessions.evict(&format!("user:{user_id}"));
    Ok(())
}

fn auth_payload(tokens: SessionTokens, user: user::Model) -> AuthPayload {
    let viewer = Some(user.id);
    AuthPayload {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        user: User::new(user, viewer),
    }
}
