//! GraphQL for the ledger: the caller's history of payments.
use async_graphql::{ComplexObject, Context, Object, SimpleObject};

use super::{
    context::{ApiResult, caller, state},
    limits,
    objects::Transaction,
    pagination::{PageInfo, TotalCount, decode_cursor, encode_cursor, page_size},
};
use crate::ledger::{self, TransactionCursor, entities::transaction};

#[derive(SimpleObject)]
pub struct TransactionEdge {
    pub cursor: String,
    pub node: Transaction,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct TransactionConnection {
    #[graphql(skip)]
    pub total_count: TotalCount,
    pub edges: Vec<TransactionEdge>,
    pub page_info: PageInfo,
}

#[ComplexObject]
impl TransactionConnection {
    /// How many transactions you are part of. Counted only when asked for.
    #[graphql(complexity = "limits::TOTAL_COUNT")]
    async fn total_count(&self) -> ApiResult<u64> {
        Ok(self.total_count.get().await?)
    }
}

const LIST: &str = "transactions";

fn transaction_cursor(transaction: &transaction::Model) -> String {
    encode_cursor(LIST, &transaction.created_at, transaction.id)
}

#[derive(Default)]
pub struct LedgerQuery;

#[Object]
impl LedgerQuery {
    /// Your ledger: visits you paid for as a member and were paid for as a pal, newest first.
    #[graphql(complexity = "limits::connection(__field, first, child_complexity)")]
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<TransactionConnection> {
        let viewer = caller(ctx).await?.user_id;
        let first = page_size(first)?;
        let after: Option<TransactionCursor> = after
            .as_deref()
            .map(|cursor| decode_cursor(LIST, cursor))
            .transpose()?;
        let db = state(ctx)?.db.clone();
        let page = ledger::transactions_of(&db, viewer, first, after).await?;
        let end_cursor = page.items.last().map(transaction_cursor);
        Ok(TransactionConnection {
            total_count: TotalCount::later(async move {
                ledger::count_transactions_of(&db, viewer).await
            }),
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
