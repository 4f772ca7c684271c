//! Keyset pages shared by the contexts' list queries. A page is ordered by a sort column and then
//! by id (unique, so the order is total); it starts after the last row of the previous page and
//! fetches one row more than asked, and that row says whether another page follows.
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Value,
};
use uuid::Uuid;

pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    /// Rows matching the filter across all pages.
    pub total_count: u64,
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
    /// Counts the rows of `query`, then fetches the page of `first` rows after `after`.
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
        let total_count = query.clone().count(conn).await?;
        let mut query = query;
        if let Some(cursor) = after {
            let key: Value = cursor.key.into();
            let (beyond_key, beyond_id) = match self.order {
                Order::Desc => (self.sort.lt(key.clone()), self.id.lt(cursor.id)),
                _ => (self.sort.gt(key.clone()), self.id.gt(cursor.id)),
            };
            query = query.filter(
                Condition::any()
                    .add(beyond_key)
                    .add(Condition::all().add(self.sort.eq(key)).add(beyond_id)),
            );
        }
        let items = query
            .order_by(self.sort, self.order.clone())
            .order_by(self.id, self.order.clone())
            .limit(first + 1)
            .all(conn)
            .await?;
        Ok(Page::from_one_extra(items, first, total_count))
    }
}

impl<T> Page<T> {
    /// `items` as fetched with `LIMIT first + 1`.
    pub fn from_one_extra(mut items: Vec<T>, first: u64, total_count: u64) -> Self {
        let has_next_page = items.len() as u64 > first;
        items.truncate(usize::try_from(first).unwrap_or(usize::MAX));
        Self {
            items,
            has_next_page,
            total_count,
        }
    }
}
