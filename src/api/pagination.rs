//! Relay-style pages: opaque cursors and the page-size cap shared by every connection.
use async_graphql::SimpleObject;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDate, Utc};
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
    if !(0..=MAX_PAGE_SIZE).contains(&first) {
        return Err(AppError::bad_input(
            "first",
            format!("must be 0 to {MAX_PAGE_SIZE}"),
        ));
    }
    Ok(u64::try_from(first).unwrap_or(0))
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

/// An opaque cursor for the row with this sort key and id.
pub fn encode_cursor<K: CursorKey>(key: &K, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", key.write()))
}

/// Decodes a cursor made by [`encode_cursor`]; anything else is a `BAD_USER_INPUT` on `after`.
pub fn decode_cursor<K: CursorKey>(cursor: &str) -> Result<Cursor<K>, AppError> {
    let invalid = || AppError::bad_input("after", "is not a cursor from this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (key, id) = text.split_once('|').ok_or_else(invalid)?;
    Ok(Cursor {
        key: K::read(key).ok_or_else(invalid)?,
        id: id.parse().map_err(|_| invalid())?,
    })
}
