//! GraphQL for identity: registration, sessions and the account.
use async_graphql::{Context, InputObject, Object, SimpleObject};
use secrecy::SecretString;

use super::{
    context::{ApiResult, caller, request, state},
    objects::User,
};
use crate::{
    domain::{Minutes, UserId},
    error::{AppError, AuthFailure},
    identity::{self, Registration, SignedIn},
    ledger,
    state::AppState,
    visits,
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

#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let caller = caller(ctx).await?;
        let model = identity::find_active_user(&state(ctx)?.db, caller.user_id.into())
            .await?
            .ok_or(AppError::Unauthenticated(AuthFailure::SessionRevoked))?;
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
        let state = state(ctx)?;
        let signed_in = state
            .identity
            .log_in(
                &state.db,
                &state.metrics,
                &input.email,
                SecretString::from(input.password),
                request(ctx)?.client_ip,
            )
            .await?;
        Ok(signed_in.into())
    }

    /// Exchanges a refresh token for new tokens. Presenting an already-used token ends the session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        input: RefreshSessionInput,
    ) -> ApiResult<AuthPayload> {
        let state = state(ctx)?;
        let signed_in = state
            .identity
            .refresh_session(&state.db, &state.metrics, &input.refresh_token)
            .await?;
        Ok(signed_in.into())
    }

    /// Ends the current session at once: its access and refresh tokens stop working.
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let caller = caller(ctx).await?;
        let state = state(ctx)?;
        state.identity.log_out(&state.db, caller).await?;
        Ok(true)
    }

    /// Deactivates the account: personal data is scrubbed and sessions end; ledger history stays.
    async fn delete_account(
        &self,
        ctx: &Context<'_>,
        input: DeleteAccountInput,
    ) -> ApiResult<bool> {
        let caller = caller(ctx).await?;
        let client_ip = request(ctx)?.client_ip;
        delete_account(state(ctx)?, caller.user_id, input.password, client_ip).await?;
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
    let password_hash = state.identity.hasher.hash(password).await?;
    let signed_in = state
        .retrying(|| async {
            let txn = state.begin().await?;
            let user = identity::create_user(&txn, &registration, password_hash.clone()).await?;
            ledger::open_balance(
                &txn,
                UserId(user.id),
                Minutes(state.config.visits.starting_minutes),
            )
            .await?;
            let tokens = state.identity.start_session(&txn, user.id).await?;
            txn.commit().await?;
            Ok(SignedIn { tokens, user })
        })
        .await?;
    Ok(signed_in.into())
}

/// Deactivation spans two contexts (the account, and the visits it is party to).
async fn delete_account(
    state: &AppState,
    user_id: UserId,
    password: String,
    client_ip: std::net::IpAddr,
) -> Result<(), AppError> {
    state
        .identity
        .confirm_password(
            &state.db,
            user_id.into(),
            SecretString::from(password),
            client_ip,
        )
        .await?;
    let deadlines = state.deadlines();
    state
        .retrying(|| async {
            let txn = state.begin().await?;
            identity::deactivate_user(&txn, user_id.into()).await?;
            visits::withdraw_user(&txn, user_id, &deadlines).await?;
            txn.commit().await?;
            Ok(())
        })
        .await?;
    state.identity.sessions.evict_user(user_id.into());
    Ok(())
}

impl From<SignedIn> for AuthPayload {
    fn from(SignedIn { tokens, user }: SignedIn) -> Self {
        let viewer = Some(UserId(user.id));
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            user: User::new(user, viewer),
        }
    }
}
