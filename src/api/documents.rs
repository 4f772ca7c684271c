//! Parsed documents, kept by their text. Clients send the same few documents over and over (an
//! app has a fixed set of operations), and async-graphql parses each request's text anew with a
//! pest grammar: in a profile of the `request` workload, parsing was about 3% of an instance's
//! CPU. A clone of the parsed tree is a fraction of that. Only documents that parsed are kept;
//! the limits async-graphql checks on a document (nesting, directives) run on the clone as on a
//! fresh parse, and so do ours (aliases, cost) and validation.
use std::{num::NonZeroUsize, sync::Mutex};

use async_graphql::{Request, parser::types::ExecutableDocument};
use lru::LruCache;

/// Longer documents are parsed every time: the store's size stays bounded by
/// `capacity * MAX_KEPT_BYTES` of text whatever clients send.
const MAX_KEPT_BYTES: usize = 4 * 1024;

pub struct ParsedDocuments {
    documents: Mutex<LruCache<String, ExecutableDocument>>,
}

impl ParsedDocuments {
    pub fn new(capacity: usize) -> Self {
        Self {
            documents: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Gives `request` its parsed document: a copy of the one kept for its text, or, parsed now,
    /// kept for the next. A document that does not parse is left for execution to refuse with its
    /// error.
    pub fn attach(&self, request: &mut Request) {
        if request.query.len() > MAX_KEPT_BYTES {
            return;
        }
        let kept = self
            .documents
            .lock()
            .ok()
            .and_then(|mut documents| documents.get(&request.query).cloned());
        match kept {
            Some(document) => request.set_parsed_query(document),
            None => {
                let query = request.query.clone();
                if let Ok(document) = request.parsed_query() {
                    let document = document.clone();
                    if let Ok(mut documents) = self.documents.lock() {
                        documents.put(query, document);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.documents.lock().map_or(0, |documents| documents.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_parsed_once_and_served_as_it_was_parsed() {
        let documents = ParsedDocuments::new(10);
        let text = "query Me { me { id email } }";
        let mut first = Request::new(text);
        documents.attach(&mut first);
        assert_eq!(documents.len(), 1);
        let mut second = Request::new(text);
        documents.attach(&mut second);
        assert_eq!(documents.len(), 1);
        let (Ok(first), Ok(second)) = (first.parsed_query(), second.parsed_query()) else {
            panic!("both parsed");
        };
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }

    #[test]
    fn documents_that_do_not_parse_or_are_long_are_not_kept() {
        let documents = ParsedDocuments::new(10);
        documents.attach(&mut Request::new("query { me { id "));
        let long = format!(
            "{{ me {{ id {} }} }}",
            "email ".repeat(MAX_KEPT_BYTES / 6 + 1)
        );
        documents.attach(&mut Request::new(long));
        assert_eq!(documents.len(), 0);
    }

    #[test]
    fn the_store_keeps_the_most_recent_documents_it_has_room_for() {
        let documents = ParsedDocuments::new(2);
        for field in ["id", "email", "firstName"] {
            documents.attach(&mut Request::new(format!("{{ me {{ {field} }} }}")));
        }
        assert_eq!(documents.len(), 2);
        let kept = documents.documents.lock().map(|documents| {
            documents
                .iter()
                .map(|(text, _)| text.clone())
                .collect::<Vec<_>>()
        });
        assert_eq!(
            kept.ok(),
            Some(vec![
                "{ me { firstName } }".to_string(),
                "{ me { email } }".to_string()
            ])
        );
    }
}
