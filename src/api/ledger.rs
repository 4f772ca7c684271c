//! GraphQL for the ledger: the caller's history of payments.
use async_graphql::{Context, Object, SimpleObject};

use super::{
    context::{ApiResult, caller, state},
    objects::Transaction,
    pagination::{PageInfo, decode_cursor, encode_cursor, page_size},
};
use crate::ledger::{self, TransactionCursor, entities::transaction};

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
    encode_cursor(&transaction.created_at, transaction.id)
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
        let after: Option<TransactionCursor> = after.as_deref().map(decode_cursor).transpose()?;
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
