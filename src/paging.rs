//! Keyset pages shared by the contexts' list queries: fetch one row more than asked, and that row
//! says whether another page follows.
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    /// Rows matching the filter across all pages.
    pub total_count: u64,
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
