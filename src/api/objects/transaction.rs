//! The `Transaction` type: one completed visit's payment.
use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{User, Visit};
use crate::{
    api::{
        context::ApiResult,
        loaders::{VisitKey, loader},
    },
    error::AppError,
    ledger::entities::transaction,
};

/// The payment for one completed visit.
pub struct Transaction(pub transaction::Model);

#[Object]
impl Transaction {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn visit(&self, ctx: &Context<'_>) -> ApiResult<Visit> {
        let visit = loader(ctx)
            .load_one(VisitKey(self.0.visit_id))
            .await?
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("transaction {} has no visit", self.0.id))
            })?;
        Ok(Visit(visit))
    }

    /// Minutes debited from the member.
    async fn minutes(&self) -> i32 {
        self.0.minutes.0
    }

    /// Minutes credited to the pal: `minutes` less the overhead, rounded half up.
    async fn pal_credit(&self) -> i32 {
        self.0.pal_credit.0
    }

    /// Minutes kept as the overhead fee.
    async fn fee(&self) -> i32 {
        self.0.fee.0
    }

    async fn member(&self, ctx: &Context<'_>) -> ApiResult<User> {
        User::load(ctx, self.0.member_id).await
    }

    async fn pal(&self, ctx: &Context<'_>) -> ApiResult<User> {
        User::load(ctx, self.0.pal_id).await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}
