//! What the API's handlers share: the schemas, the instance's state, and the stores and caps
//! that belong to the API rather than to a context.
use std::sync::Arc;

use super::{
    documents::ParsedDocuments,
    persisted::PersistedQueries,
    schema::{AppSchema, introspection_schema, schema},
    trusted::TrustedDocuments,
    websocket::LiveLimits,
};
use crate::state::AppState;

/// Documents an instance remembers for hash-only requests (each at most `MAX_BODY_BYTES`).
const PERSISTED_QUERIES_KEPT: usize = 1000;
/// An app's operations, several versions of it, with room to spare.
const PARSED_DOCUMENTS_KEPT: usize = 256;

#[derive(Clone)]
pub struct ApiState {
    pub schema: AppSchema,
    /// For operations that read only the schema: looser depth and complexity limits.
    pub introspection_schema: Option<AppSchema>,
    pub app: Arc<AppState>,
    pub live_limits: Arc<LiveLimits>,
    pub persisted: Arc<PersistedQueries>,
    pub documents: Arc<ParsedDocuments>,
}

impl ApiState {
    pub fn new(app: Arc<AppState>, trusted: Option<Arc<TrustedDocuments>>) -> Self {
        Self {
            schema: schema(app.clone()),
            introspection_schema: introspection_schema(app.clone()),
            app,
            live_limits: Arc::default(),
            persisted: Arc::new(match trusted {
                Some(documents) => PersistedQueries::trusted(documents),
                None => PersistedQueries::new(PERSISTED_QUERIES_KEPT),
            }),
            documents: Arc::new(ParsedDocuments::new(PARSED_DOCUMENTS_KEPT)),
        }
    }
}
