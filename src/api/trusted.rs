//! Trusted documents: the operations an app ships with, as an allow-list (`TRUSTED_DOCUMENTS`).
//! With a manifest loaded, a request runs only a document of it, named by its SHA-256 or sent
//! whole; anything else is refused before it is parsed (see `persisted`).
//!
//! The manifest is either shape clients generate: GraphQL Codegen's `persisted-documents.json`
//! (`{ "<sha256>": "<document>" }`) or Apollo's persisted query manifest (`{"format":
//! "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "name", "type",
//! "body"}]}`). Every entry's hash is checked against its document when it is loaded.
use std::{collections::HashMap, path::Path};

use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub struct TrustedDocuments {
    by_hash: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Manifest {
    Apollo {
        format: String,
        version: u32,
        operations: Vec<ApolloOperation>,
    },
    Codegen(HashMap<String, String>),
}

#[derive(Deserialize)]
struct ApolloOperation {
    id: String,
    #[serde(default)]
    name: Option<String>,
    body: String,
}

const APOLLO_FORMAT: &str = "apollo-persisted-query-manifest";

impl TrustedDocuments {
    /// Reads and checks the manifest; every refusal names the file, and the entry at fault.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("TRUSTED_DOCUMENTS: cannot read {file}"))?;
        Self::parse(&text).with_context(|| format!("TRUSTED_DOCUMENTS: {file}"))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Manifest = serde_json::from_str(text).context(
            "neither a persisted-documents.json ({\"<sha256>\": \"<document>\"}) nor an \
             apollo-persisted-query-manifest",
        )?;
        let entries: Vec<(String, String, String)> = match manifest {
            Manifest::Apollo {
                format,
                version,
                operations,
            } => {
                if format != APOLLO_FORMAT || version != 1 {
                    bail!(
                        "format {format:?} version {version}: expected {APOLLO_FORMAT} version 1"
                    );
                }
                operations
                    .into_iter()
                    .map(|operation| {
                        let label = operation.name.unwrap_or_else(|| operation.id.clone());
                        (operation.id, label, operation.body)
                    })
                    .collect()
            }
            Manifest::Codegen(documents) => documents
                .into_iter()
                .map(|(hash, document)| (hash.clone(), hash, document))
                .collect(),
        };
        let mut by_hash = HashMap::with_capacity(entries.len());
        for (hash, label, document) in entries {
            let hash = hash.to_ascii_lowercase();
            if !is_sha256(&hash) {
                bail!("entry {label}: {hash:?} is not a SHA-256 (64 hexadecimal digits)");
            }
            if sha256(&document) != hash {
                bail!("entry {label}: {hash} is not the SHA-256 of its document");
            }
            by_hash.insert(hash, document);
        }
        if by_hash.is_empty() {
            bail!("the manifest lists no document");
        }
        Ok(Self { by_hash })
    }

    pub fn get(&self, hash: &str) -> Option<&String> {
        self.by_hash.get(hash)
    }

    pub fn contains(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

pub fn sha256(document: &str) -> String {
    format!("{:x}", Sha256::digest(document.as_bytes()))
}

pub fn is_sha256(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = "query Me { me { id } }";

    #[test]
    fn both_manifest_shapes_load_and_a_wrong_hash_names_its_entry() {
        let codegen = format!(r#"{{ "{}": "{DOCUMENT}" }}"#, sha256(DOCUMENT));
        let loaded = TrustedDocuments::parse(&codegen).expect("codegen's shape");
        assert_eq!(
            loaded.get(&sha256(DOCUMENT)).map(String::as_str),
            Some(DOCUMENT)
        );
        let apollo = format!(
            r#"{{"format":"apollo-persisted-query-manifest","version":1,"operations":[{{"id":"{}","name":"Me","type":"query","body":"{DOCUMENT}"}}]}}"#,
            sha256(DOCUMENT).to_uppercase()
        );
        assert_eq!(
            TrustedDocuments::parse(&apollo)
                .expect("Apollo's shape")
                .len(),
            1
        );

        let wrong = format!(r#"{{ "{}": "{DOCUMENT}" }}"#, "0".repeat(64));
        let refused = TrustedDocuments::parse(&wrong)
            .err()
            .map(|error| format!("{error:#}"));
        assert!(
            refused
                .as_deref()
                .is_some_and(|said| said.contains("not the SHA-256 of its document")),
            "{refused:?}"
        );
        let wrong_apollo = apollo
            .replace("\"Me\"", "\"Broken\"")
            .replace("{ id }", "{ email }");
        let refused = TrustedDocuments::parse(&wrong_apollo)
            .err()
            .map(|error| format!("{error:#}"));
        assert!(
            refused
                .as_deref()
                .is_some_and(|said| said.contains("entry Broken")),
            "{refused:?}"
        );
        for malformed in [
            "[]",
            "{\"format\":\"other\",\"version\":1,\"operations\":[]}",
            "{}",
            "nope",
        ] {
            assert!(TrustedDocuments::parse(malformed).is_err(), "{malformed}");
        }
    }
}
