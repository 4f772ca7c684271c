//! The `User` type: what anyone may see of a person, and what only they see of themself.
use async_graphql::{Context, ID, Object};

use crate::{
    api::{
        context::{ApiResult, caller},
        loaders::{BalanceKey, OutstandingKey, UserKey, loader},
    },
    domain::UserId,
    error::AppError,
    identity::entities::user,
};

/// A person using the service, as a member, a pal, or both.
pub struct User {
    pub model: user::Model,
    /// Whether the viewer is this user: only they see their email and minutes.
    pub viewer_is_self: bool,
}

impl User {
    pub fn new(model: user::Model, viewer: Option<UserId>) -> Self {
        let viewer_is_self = viewer == Some(UserId(model.id));
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
        let balance = loader(ctx).load_one(BalanceKey(self.user_id())).await?;
        Ok(balance.map(i32::from))
    }

    /// Minutes held by the user's requested and accepted visits. Only visible to the user themself.
    async fn outstanding_minutes(&self, ctx: &Context<'_>) -> ApiResult<Option<i32>> {
        if !self.viewer_is_self {
            return Ok(None);
        }
        let outstanding = loader(ctx).load_one(OutstandingKey(self.user_id())).await?;
        Ok(outstanding.map(i32::from))
    }

    /// Minutes the user can still book: `minutes - outstandingMinutes`. Only visible to the user themself.
    async fn available_minutes(&self, ctx: &Context<'_>) -> ApiResult<Option<i32>> {
        if !self.viewer_is_self {
            return Ok(None);
        }
        let loader = loader(ctx);
        let balance = loader
            .load_one(BalanceKey(self.user_id()))
            .await?
            .unwrap_or_default();
        let outstanding = loader
            .load_one(OutstandingKey(self.user_id()))
            .await?
            .unwrap_or_default();
        Ok(Some((balance - outstanding).into()))
    }
}

impl User {
    fn user_id(&self) -> UserId {
        UserId(self.model.id)
    }

    /// A user as the caller sees them, through the request's batch loader.
    pub async fn load(ctx: &Context<'_>, user_id: UserId) -> ApiResult<Self> {
        let viewer = caller(ctx).await?.user_id;
        let model = loader(ctx)
            .load_one(UserKey(user_id))
            .await?
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("user {user_id} referenced but missing"))
            })?;
        Ok(Self::new(model, Some(viewer)))
    }
}
