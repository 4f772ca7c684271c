//! Relay-style pages: opaque cursors, the page-size cap and the total count shared by every
//! connection.
use async_graphql::SimpleObject;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use std::sync::Mutex;

use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::{error::AppError, paging::Cursor};

pub const DEFAULT_PAGE_SIZE: i32 = 20;
pub const MAX_PAGE_SIZE: i32 = 100;

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
}

/// `first`, checked against the cap.
pub fn page_size(first: Option<i32>) -> Result<u64, AppError> {
    let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&first) {
        return Err(AppError::bad_input(
            "first",
            format!("must be 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    Ok(u64::try_from(first).unwrap_or(1))
}

/// What a page size costs in the complexity budget: a missing `first` is the default page, an
/// invalid one (refused before it runs) costs the most a valid one could.
pub fn page_cost(first: Option<i32>) -> usize {
    let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
    usize::try_from(first.clamp(1, MAX_PAGE_SIZE)).unwrap_or(1)
}

/// A connection's `totalCount`: the count is a future that runs only if the client selects the
/// field, and once however often the client selects it (aliases).
pub struct TotalCount {
    count: Mutex<Option<BoxFuture<'static, Result<u64, AppError>>>>,
    counted: OnceCell<u64>,
}

impl TotalCount {
    /// `count` is not polled until the field is resolved (futures do nothing until then).
    pub fn later(count: impl Future<Output = Result<u64, AppError>> + Send + 'static) -> Self {
        Self {
            count: Mutex::new(Some(Box::pin(count))),
            counted: OnceCell::new(),
        }
    }

    pub async fn get(&self) -> Result<u64, AppError> {
        self.counted
            .get_or_try_init(|| async {
                let count = self.count.lock().ok().and_then(|mut count| count.take());
                match count {
                    Some(count) => count.await,
                    // Only after the one count failed: its error has been reported already.
                    None => Err(AppError::internal(anyhow::anyhow!("the count failed"))),
                }
            })
            .await
            .copied()
    }
}

/// A list's sort key as it is written inside a cursor.
pub trait CursorKey: Sized {
    fn write(&self) -> String;
    fn read(text: &str) -> Option<Self>;
}

impl CursorKey for NaiveDate {
    fn write(&self) -> String {
        self.to_string()
    }

    fn read(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl CursorKey for DateTime<Utc> {
    fn write(&self) -> String {
        self.to_rfc3339()
    }

    fn read(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.with_timezone(&Utc))
    }
}

/// An opaque cursor for the row with this sort key and id in the list named `list` (the list and
/// its filter: a cursor only means something in the order it was taken from).
pub fn encode_cursor<K: CursorKey>(list: &str, key: &K, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}|{}|{id}", key.write()))
}

/// Decodes a cursor [`encode_cursor`] made for `list`; anything else (garbage, an edited cursor,
/// one from another list or filter) is a `BAD_USER_INPUT` on `after`.
pub fn decode_cursor<K: CursorKey>(list: &str, cursor: &str) -> Result<Cursor<K>, AppError> {
    let invalid = || AppError::bad_input("after", "is not a cursor from this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.rsplitn(3, '|');
    let (Some(id), Some(key), Some(from)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if from != list {
        return Err(AppError::bad_input(
            "after",
            "is a cursor from another list or filter: start again without `after`",
        ));
    }
    Ok(Cursor {
        key: K::read(key).ok_or_else(invalid)?,
        id: id.parse().map_err(|_| invalid())?,
    })
}
