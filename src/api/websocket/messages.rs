//! What a `graphql-transport-ws` client sends.
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    ConnectionInit {
        payload: Option<Value>,
    },
    Ping {
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Pong {
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePayload {
    /// Absent when the operation is named by its hash instead.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub variables: Option<Value>,
    #[serde(default)]
    pub operation_name: Option<String>,
    /// `persistedQuery`, as over HTTP.
    #[serde(default)]
    pub extensions: Option<async_graphql::Extensions>,
    #[serde(default)]
    pub document_id: Option<async_graphql::Value>,
}

impl SubscribePayload {
    /// A document, or the hash of one: without either the message is not the protocol's.
    pub fn names_a_document(&self) -> bool {
        self.query.is_some()
            || self.document_id.is_some()
            || self
                .extensions
                .as_ref()
                .is_some_and(|extensions| extensions.contains_key("persistedQuery"))
    }
}
