//! Documents named by their SHA-256. Automatic persisted queries are the protocol Apollo's and
//! urql's links speak: a client sends only the hash (`extensions.persistedQuery`, or the GraphQL
//! over HTTP draft's `documentId`), often as a cacheable GET; an instance that does not know it
//! answers `PERSISTED_QUERY_NOT_FOUND`, and the client sends the document once more with its hash
//! to register it. Each instance keeps its own bounded store; a client that reaches another
//! instance registers once more. With trusted documents (`api/trusted.rs`) the manifest is the
//! store, nothing registers, and any other document is refused.
//!
//! Resolved before the request runs (`api/execution.rs`; for GET in `api/graphql_http.rs`; a
//! socket's `subscribe` in `api/websocket/`), not by async-graphql's extension (which resolves
//! inside execution): a hash-only GET must be checked for a mutation (405) before it runs, and a
//! client acts on `extensions.code`, which that extension does not set. The text is kept, so a
//! persisted query then takes the path any other does: parsed with the limits, weighed,
//! validated.
use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use async_graphql::{Request, ServerError, Value};
use lru::LruCache;

use super::{
    errors::{ErrorCode, server_error},
    trusted::{TrustedDocuments, is_sha256, sha256},
};

/// Where hashes are looked up: documents clients registered (automatic persisted queries), or the
/// trusted documents' manifest, which is then the only documents that run.
pub struct PersistedQueries {
    store: Store,
}

enum Store {
    Automatic(Mutex<LruCache<String, String>>),
    Trusted(Arc<TrustedDocuments>),
}

/// Why a request's document could not be used (an unknown or malformed hash, or a document that
/// is not a trusted one): the error code and message to answer with.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

impl Refused {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn into_server_error(self) -> ServerError {
        server_error(self.code, self.message)
    }
}

impl PersistedQueries {
    pub fn new(capacity: usize) -> Self {
        Self {
            store: Store::Automatic(Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            ))),
        }
    }

    /// Only the manifest's documents run; nothing is registered.
    pub fn trusted(documents: Arc<TrustedDocuments>) -> Self {
        Self {
            store: Store::Trusted(documents),
        }
    }

    /// Whether only trusted documents run: their refusals are worth counting, where an unknown
    /// hash is only the first step of a client registering it.
    pub fn is_trusted(&self) -> bool {
        matches!(self.store, Store::Trusted(_))
    }

    /// Fills in a hash-only request's document, and registers a document sent with its hash
    /// (automatic), or refuses any document not in the manifest (trusted). Without trusted
    /// documents, requests without the extension pass untouched.
    pub fn resolve(&self, request: &mut Request) -> Result<(), Refused> {
        if let Some(document_id) = request.extensions.remove(DOCUMENT_ID) {
            name_by_document_id(request, &document_id)?;
        }
        let hash = match request.extensions.remove("persistedQuery") {
            Some(extension) => Some(hash_of(&extension)?),
            None => None,
        };
        if let Some(hash) = &hash
            && !request.query.is_empty()
            && sha256(&request.query) != *hash
        {
            return Err(Refused::new(
                ErrorCode::BadUserInput,
                "persistedQuery.sha256Hash is not the SHA-256 of the query",
            ));
        }
        match (&self.store, hash) {
            (Store::Automatic(_), None) => Ok(()),
            (Store::Automatic(documents), Some(hash)) => {
                let mut documents = documents
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if request.query.is_empty() {
                    request.query = documents.get(&hash).ok_or_else(not_found)?.clone();
                } else {
                    documents.put(hash, request.query.clone());
                }
                Ok(())
            }
            (Store::Trusted(documents), Some(hash)) if request.query.is_empty() => {
                request.query = documents.get(&hash).ok_or_else(not_found)?.clone();
                Ok(())
            }
            (Store::Trusted(documents), hash) => {
                let hash = hash.unwrap_or_else(|| sha256(&request.query));
                if documents.contains(&hash) {
                    Ok(())
                } else {
                    Err(Refused::new(
                        ErrorCode::PersistedQueryNotInList,
                        "this server runs only its trusted documents; this one is not among them",
                    ))
                }
            }
        }
    }
}

fn not_found() -> Refused {
    // Apollo's links recognise the message as well as the code.
    Refused::new(ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound")
}

/// Where the readers leave a request's `documentId` for [`PersistedQueries::resolve`].
pub const DOCUMENT_ID: &str = "documentId";

/// Leaves the `documentId` a transport read beside the request (async-graphql's request has no
/// such field) where [`PersistedQueries::resolve`] finds it.
pub fn carry_document_id(request: &mut Request, document_id: Option<Value>) {
    if let Some(document_id) = document_id {
        request.extensions.insert(DOCUMENT_ID.into(), document_id);
    }
}

/// `documentId: "sha256:<hash>"` (the GraphQL over HTTP draft's way to name a persisted
/// document), read as the `persistedQuery` extension Apollo's clients send.
fn name_by_document_id(request: &mut Request, document_id: &Value) -> Result<(), Refused> {
    let hash = match document_id {
        Value::String(document_id) => document_id.as_str(),
        _ => "",
    }
    .strip_prefix("sha256:")
    .filter(|hash| is_sha256(hash))
    .ok_or_else(|| {
        Refused::new(
            ErrorCode::BadUserInput,
            "documentId must be \"sha256:\" and 64 hexadecimal digits",
        )
    })?;
    let mut extension = async_graphql::indexmap::IndexMap::new();
    extension.insert(async_graphql::Name::new("version"), Value::from(1));
    extension.insert(async_graphql::Name::new("sha256Hash"), Value::from(hash));
    request
        .extensions
        .insert("persistedQuery".into(), Value::Object(extension));
    Ok(())
}

fn hash_of(extension: &Value) -> Result<String, Refused> {
    let invalid = |message: &str| Refused::new(ErrorCode::BadUserInput, message);
    let Value::Object(fields) = extension else {
        return Err(invalid("persistedQuery must be an object"));
    };
    match fields.get("version") {
        Some(Value::Number(version)) if version.as_i64() == Some(1) => {}
        _ => return Err(invalid("persistedQuery.version must be 1")),
    }
    match fields.get("sha256Hash") {
        Some(Value::String(hash)) if is_sha256(hash) => Ok(hash.to_ascii_lowercase()),
        _ => Err(invalid(
            "persistedQuery.sha256Hash must be 64 hexadecimal digits",
        )),
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{Name, Value};
    use sha2::{Digest, Sha256};

    use super::*;

    fn request(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        let mut extension = async_graphql::indexmap::IndexMap::new();
        extension.insert(Name::new("version"), Value::from(1));
        extension.insert(Name::new("sha256Hash"), Value::from(hash));
        request
            .extensions
            .insert("persistedQuery".into(), Value::Object(extension));
        request
    }

    const QUERY: &str = "{ __typename }";

    fn hash() -> String {
        format!("{:x}", Sha256::digest(QUERY.as_bytes()))
    }

    #[test]
    fn an_unknown_hash_is_not_found_until_registered() {
        let store = PersistedQueries::new(10);
        let mut hash_only = request("", &hash());
        assert_eq!(
            store
                .resolve(&mut hash_only)
                .map_err(|refused| refused.code),
            Err(ErrorCode::PersistedQueryNotFound)
        );
        store
            .resolve(&mut request(QUERY, &hash()))
            .expect("registers");
        let mut hash_only = request("", &hash().to_uppercase());
        store.resolve(&mut hash_only).expect("found");
        assert_eq!(hash_only.query, QUERY);
        assert!(hash_only.extensions.is_empty());
    }

    #[test]
    fn a_hash_that_is_not_the_documents_registers_nothing() {
        let store = PersistedQueries::new(10);
        let wrong = "0".repeat(64);
        let refused = store
            .resolve(&mut request(QUERY, &wrong))
            .expect_err("refused");
        assert_eq!(refused.code, ErrorCode::BadUserInput);
        assert_eq!(
            store.resolve(&mut request("", &wrong)).map_err(|r| r.code),
            Err(ErrorCode::PersistedQueryNotFound)
        );
        let refused = store.resolve(&mut request("", "abc")).expect_err("refused");
        assert!(refused.message.contains("64 hexadecimal"));
    }

    #[test]
    fn the_store_forgets_the_least_recently_used_beyond_its_capacity() {
        let store = PersistedQueries::new(1);
        let other = "{ me { id } }";
        let other_hash = format!("{:x}", Sha256::digest(other.as_bytes()));
        store
            .resolve(&mut request(QUERY, &hash()))
            .expect("registers");
        store
            .resolve(&mut request(other, &other_hash))
            .expect("registers");
        assert_eq!(
            store.resolve(&mut request("", &hash())).map_err(|r| r.code),
            Err(ErrorCode::PersistedQueryNotFound)
        );
    }
}
