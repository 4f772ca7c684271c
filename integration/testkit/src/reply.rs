//! A GraphQL response read by path. Indexing a `serde_json::Value` with a key it lacks yields
//! `null`, so a mistyped path in a test reads as "no error" or "field is null" and the test passes
//! for the wrong reason; a [`Reply`] panics instead, naming the key and showing what was there.
use std::{
    fmt,
    ops::{Deref, Index},
};

use ref_cast::RefCast;
use serde_json::Value;

#[derive(Clone, PartialEq, RefCast, serde::Serialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Reply(Value);

impl Reply {
    pub fn new(body: Value) -> Self {
        Self(body)
    }

    pub fn into_value(self) -> Value {
        self.0
    }

    /// A key that may legitimately be absent (`errors` on success, say): the explicit way to ask.
    pub fn get(&self, key: &str) -> Option<&Reply> {
        self.0.get(key).map(Reply::ref_cast)
    }

    /// The string here; panics when it is anything else, null included.
    #[track_caller]
    pub fn str(&self) -> &str {
        self.0
            .as_str()
            .unwrap_or_else(|| panic!("expected a string, found {self}"))
    }

    /// The integer here; panics when it is anything else.
    #[track_caller]
    pub fn int(&self) -> i64 {
        self.0
            .as_i64()
            .unwrap_or_else(|| panic!("expected an integer, found {self}"))
    }

    /// The elements of the list here; panics when it is not a list.
    #[track_caller]
    pub fn items(&self) -> impl ExactSizeIterator<Item = &Reply> {
        self.0
            .as_array()
            .unwrap_or_else(|| panic!("expected a list, found {self}"))
            .iter()
            .map(Reply::ref_cast)
    }

    /// The `extensions.code` of the first error, `None` when the response has no errors.
    pub fn error_code(&self) -> Option<&str> {
        self.0
            .get("errors")?
            .get(0)?
            .get("extensions")?
            .get("code")?
            .as_str()
    }

    pub fn has_errors(&self) -> bool {
        self.0.get("errors").is_some()
    }
}

impl Index<&str> for Reply {
    type Output = Reply;

    #[track_caller]
    fn index(&self, key: &str) -> &Reply {
        match self.0.get(key) {
            Some(value) => Reply::ref_cast(value),
            None => panic!("no `{key}` in {self}"),
        }
    }
}

impl Index<usize> for Reply {
    type Output = Reply;

    #[track_caller]
    fn index(&self, position: usize) -> &Reply {
        match self.0.get(position) {
            Some(value) => Reply::ref_cast(value),
            None => panic!("no element {position} in {self}"),
        }
    }
}

impl Deref for Reply {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

impl PartialEq<Value> for Reply {
    fn eq(&self, other: &Value) -> bool {
        self.0 == *other
    }
}

macro_rules! compares_like_json {
    ($($other:ty),*) => {$(
        impl PartialEq<$other> for Reply {
            fn eq(&self, other: &$other) -> bool {
                self.0 == *other
            }
        }
    )*};
}
compares_like_json!(&str, str, String, bool, i32, i64, u64, usize);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Reply;

    fn reply() -> Reply {
        Reply::new(json!({ "data": { "me": { "id": "u1", "minutes": 120, "pal": null } } }))
    }

    #[test]
    fn a_path_that_is_there_reads_like_json() {
        let reply = reply();
        assert_eq!(reply["data"]["me"]["id"], "u1");
        assert_eq!(reply["data"]["me"]["minutes"], 120);
        assert!(reply["data"]["me"]["pal"].is_null(), "present and null");
        assert!(!reply.has_errors());
        assert_eq!(reply.error_code(), None);
    }

    #[test]
    #[should_panic(expected = "no `minuets`")]
    fn a_mistyped_key_panics_instead_of_reading_as_null() {
        let _ = &reply()["data"]["me"]["minuets"];
    }

    #[test]
    #[should_panic(expected = "no element 0")]
    fn a_missing_list_element_panics() {
        let _ = &reply()["data"]["me"]["id"][0];
    }

    #[test]
    fn errors_are_read_by_code() {
        let refused = Reply::new(json!({
            "data": null,
            "errors": [{ "message": "no", "extensions": { "code": "FORBIDDEN" } }]
        }));
        assert!(refused.has_errors());
        assert_eq!(refused.error_code(), Some("FORBIDDEN"));
        assert_eq!(refused["errors"].items().len(), 1);
    }
}
