//! Relay-style pages: opaque cursors and the page-size cap shared by every connection.
use async_graphql::SimpleObject;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::AppError;

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

pub fn encode_cursor(parts: &str) -> String {
    URL_SAFE_NO_PAD.encode(parts)
}

/// Decodes a cursor made by [`encode_cursor`] into its two `|`-separated parts.
pub fn decode_cursor(cursor: &str) -> Result<(String, String), AppError> {
    let invalid = || AppError::bad_input("after", "is not a cursor from this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (first, second) = text.split_once('|').ok_or_else(invalid)?;
    Ok((first.to_string(), second.to_string()))
}
