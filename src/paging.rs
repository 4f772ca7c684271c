//! Keyset pages shared by the contexts' list queries. A page is ordered by a sort column and then
//! by id (unique, so the order is total); it starts after the last row of the previous page and
//! fetches one row more than asked, and that row says whether another page follows.
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    Select, Value,
    sea_query::{Expr, ExprTrait, SimpleExpr},
};
use uuid::Uuid;

pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
}

/// Where a page starts: the sort key and id of the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor<K> {
    pub key: K,
    pub id: Uuid,
}

/// The two columns a list is ordered by, and in which direction.
pub struct Keyset<S, I> {
    pub sort: S,
    pub id: I,
    pub order: Order,
}

impl<S: ColumnTrait, I: ColumnTrait> Keyset<S, I> {
    /// The page of `first` rows of `query` after `after`. Counting is the caller's to ask for
    /// separately: most clients never show a total, and a count reads every matching row.
    pub async fn fetch<E, K>(
        &self,
        conn: &impl ConnectionTrait,
        query: Select<E>,
        first: u64,
        after: Option<Cursor<K>>,
    ) -> Result<Page<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::Model: Sync,
        K: Into<Value>,
    {
        let items = self.rows(conn, query, first + 1, after).await?;
        Ok(Page::from_one_extra(items, first))
    }

    /// Up to `limit` rows of `query` after `after`, in this order.
    pub async fn rows<E, K>(
        &self,
        conn: &impl ConnectionTrait,
        query: Select<E>,
        limit: u64,
        after: Option<Cursor<K>>,
    ) -> Result<Vec<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::Model: Sync,
        K: Into<Value>,
    {
        let mut query = query;
        if let Some(cursor) = after {
            query = query.filter(self.beyond(cursor));
        }
        query
            .order_by(self.sort, self.order.clone())
            .order_by(self.id, self.order.clone())
            .limit(limit)
            .all(conn)
            .await
    }

    /// Rows after `cursor` in this order, as one row comparison: `(sort, id) > (key, id)` is an
    /// index range PostgreSQL starts at the cursor, where the equivalent `OR` of two conditions
    /// may be read from the start of the index and filtered.
    fn beyond<K: Into<Value>>(&self, cursor: Cursor<K>) -> SimpleExpr {
        let columns = Expr::tuple([Expr::col(self.sort), Expr::col(self.id)]);
        let position = Expr::tuple([Expr::val(cursor.key.into()), Expr::val(cursor.id)]);
        match self.order {
            Order::Desc => columns.lt(position),
            _ => columns.gt(position),
        }
    }
}

impl<T> Page<T> {
    /// `items` as fetched with `LIMIT first + 1`.
    pub fn from_one_extra(mut items: Vec<T>, first: u64) -> Self {
        let has_next_page = items.len() as u64 > first;
        items.truncate(usize::try_from(first).unwrap_or(usize::MAX));
        Self {
            items,
            has_next_page,
        }
    }
}
