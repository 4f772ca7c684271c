//! GraphQL for the ledger: the `Transaction` type and the caller's history.
use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    context::{ApiResult, caller, state},
    identity::User,
    loaders::{VisitKey, loader},
    pagination::{PageInfo, decode_cursor, encode_cursor, page_size},
    visits::{Visit, load_user},
};
use crate::{
    error::AppError,
    ledger::{self, TransactionCursor, entities::transaction},
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
        self.0.minutes
    }

    /// Minutes credited to the pal: `minutes` less the overhead, rounded half up.
    async fn pal_credit(&self) -> i32 {
        self.0.pal_credit
    }

    /// Minutes kept as the overhead fee.
    async fn fee(&self) -> i32 {
        self.0.fee
    }

    async fn member(&self, ctx: &Context<'_>) -> ApiResult<User> {
        load_user(ctx, self.0.member_id).await
    }

    async fn pal(&self, ctx: &Context<'_>) -> ApiResult<User> {
        load_user(ctx, self.0.pal_id).await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(SimpleObject)]
pub struct TransactionEdge {
    pub cursor: String,
    pub node: Transaction,
}

#[derive(SimpleObject)]
pub struct TransactionConnection {
    pub total_count: u64,
    pub edges: Vec<TransactionEdge>,
    pub page_info: PageInfo,
}

fn transaction_cursor(transaction: &transaction::Model) -> String {
    encode_cursor(&format!(
        "{}|{}",
        transaction.created_at.to_rfc3339(),
        transaction.id
    ))
}

fn parse_transaction_cursor(cursor: &str) -> Result<TransactionCursor, AppError> {
    let (created_at, id) = decode_cursor(cursor)?;
    let invalid = || AppError::bad_input("after", "is not a cursor from this API");
    Ok(TransactionCursor {
        created_at: DateTime::parse_from_rfc3339(&created_at)
            .map_err(|_| invalid())?
            .with_timezone(&Utc),
        id: id.parse().map_err(|_| invalid())?,
    })
}

#[derive(Default)]
pub struct LedgerQuery;

#[Object]
impl LedgerQuery {
    /// Your ledger: visits you paid for as a member and were paid for as a pal, newest first.
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<TransactionConnection> {
        let viewer = caller(ctx).await?.user_id;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_transaction_cursor).transpose()?;
        let page = ledger::transactions_of(&state(ctx)?.db, viewer, first, after).await?;
        let end_cursor = page.items.last().map(transaction_cursor);
        Ok(TransactionConnection {
            total_count: page.total_count,
            edges: page
                .items
                .into_iter()
                .map(|transaction| TransactionEdge {
                    cursor: transaction_cursor(&transaction),
                    node: Transaction(transaction),
                })
                .collect(),
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor,
            },
        })
    }
}
