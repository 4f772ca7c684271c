//! Parsed documents, kept by their text. Clients send the same few documents over and over (an
//! app has a fixed set of operations), and async-graphql parses each request's text anew with a
//! pest grammar: in a profile of the `request` workload, parsing was about 3% of an instance's
//! CPU. A copy of the parsed tree is a fraction of that. The limits async-graphql checks on a
//! document (nesting, directives) run on the copy as on a fresh parse, and so do ours (aliases,
//! cost) and validation.
//!
//! Only documents that were accepted are kept (parsed, within every limit, valid), so refused
//! ones cannot push an app's operations out; and only small ones, so the store's memory stays
//! bounded however clients write their documents: at most [`MAX_KEPT_SELECTIONS`] selections in
//! at most [`MAX_KEPT_BYTES`] of text each (a parsed selection is a few hundred bytes).
use std::{
    num::NonZeroUsize,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use async_graphql::{
    Request,
    parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet},
};
use lru::LruCache;

pub const MAX_KEPT_BYTES: usize = 4 * 1024;
pub const MAX_KEPT_SELECTIONS: usize = 256;

pub struct ParsedDocuments {
    documents: Mutex<LruCache<String, Arc<ExecutableDocument>>>,
    /// Requests that were given a kept document.
    hits: AtomicU64,
}

/// A document parsed for this request and not kept yet: [`ParsedDocuments::keep`] it once the
/// request shows it was accepted.
pub struct Unkept {
    text: String,
    document: Arc<ExecutableDocument>,
}

impl ParsedDocuments {
    pub fn new(capacity: usize) -> Self {
        Self {
            documents: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hits: AtomicU64::new(0),
        }
    }

    /// Gives `request` its parsed document: a copy of the one kept for its text, or one parsed
    /// now, which comes back to be kept if the request is accepted. A document that does not
    /// parse is left for execution to refuse with its error.
    pub fn attach(&self, request: &mut Request) -> Option<Unkept> {
        if request.query.len() > MAX_KEPT_BYTES {
            return None;
        }
        // Only the pointer is copied under the lock; the tree is copied after it.
        let kept = self
            .documents
            .lock()
            .ok()
            .and_then(|mut documents| documents.get(&request.query).cloned());
        if let Some(document) = kept {
            self.hits.fetch_add(1, Ordering::Relaxed);
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return None;
        }
        let text = request.query.clone();
        let document = request.parsed_query().ok()?;
        (selections(document) <= MAX_KEPT_SELECTIONS).then(|| Unkept {
            text,
            document: Arc::new(document.clone()),
        })
    }

    pub fn keep(&self, unkept: Unkept) {
        if let Ok(mut documents) = self.documents.lock() {
            documents.put(unkept.text, unkept.document);
        }
    }

    #[cfg(test)]
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.documents.lock().map_or(0, |documents| documents.len())
    }
}

/// How many selections (fields, fragment spreads, inline fragments) the document holds, in its
/// operations and fragments.
fn selections(document: &ExecutableDocument) -> usize {
    fn count(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| {
                1 + match &item.node {
                    Selection::Field(field) => count(&field.node.selection_set.node),
                    Selection::InlineFragment(fragment) => count(&fragment.node.selection_set.node),
                    Selection::FragmentSpread(_) => 0,
                }
            })
            .sum()
    }
    let operations: usize = match &document.operations {
        DocumentOperations::Single(operation) => count(&operation.node.selection_set.node),
        DocumentOperations::Multiple(operations) => operations
            .values()
            .map(|operation| count(&operation.node.selection_set.node))
            .sum(),
    };
    let fragments: usize = document
        .fragments
        .values()
        .map(|fragment| count(&fragment.node.selection_set.node))
        .sum();
    operations + fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(documents: &ParsedDocuments, text: &str) -> Option<Unkept> {
        documents.attach(&mut Request::new(text))
    }

    #[test]
    fn an_accepted_document_is_parsed_once_and_then_served_as_it_was_parsed() {
        let documents = ParsedDocuments::new(10);
        let text = "query Me { me { id email } }";
        let mut first = Request::new(text);
        let unkept = documents.attach(&mut first);
        assert_eq!(
            (documents.len(), documents.hits()),
            (0, 0),
            "not yet accepted"
        );
        documents.keep(unkept.expect("a document to keep"));

        let mut second = Request::new(text);
        assert!(
            documents.attach(&mut second).is_none(),
            "nothing new to keep"
        );
        assert_eq!(documents.hits(), 1);
        let (Ok(first), Ok(second)) = (first.parsed_query(), second.parsed_query()) else {
            panic!("both parsed");
        };
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }

    #[test]
    fn documents_that_do_not_parse_are_long_or_large_are_not_offered() {
        let documents = ParsedDocuments::new(10);
        assert!(served(&documents, "query { me { id ").is_none());
        let long = format!(
            "{{ me {{ id {} }} }}",
            "email ".repeat(MAX_KEPT_BYTES / 6 + 1)
        );
        assert!(served(&documents, &long).is_none());
        let large = format!("{{ me {{ {} }} }}", "a ".repeat(MAX_KEPT_SELECTIONS));
        assert!(large.len() <= MAX_KEPT_BYTES);
        assert!(served(&documents, &large).is_none());
        let small = format!("{{ me {{ {} }} }}", "a ".repeat(MAX_KEPT_SELECTIONS - 1));
        assert!(served(&documents, &small).is_some());
    }

    #[test]
    fn the_store_keeps_the_most_recent_documents_it_has_room_for() {
        let documents = ParsedDocuments::new(2);
        for field in ["id", "email", "firstName"] {
            let unkept = served(&documents, &format!("{{ me {{ {field} }} }}"));
            documents.keep(unkept.expect("a document to keep"));
        }
        assert_eq!(documents.len(), 2);
        assert!(served(&documents, "{ me { id } }").is_some(), "pushed out");
        assert!(served(&documents, "{ me { firstName } }").is_none(), "kept");
        assert_eq!(documents.hits(), 1);
    }
}
