//! What one operation may cost, decided before any resolver runs (so before any SQL), and the
//! codes clients expect when a document is refused: `GRAPHQL_PARSE_FAILED`,
//! `GRAPHQL_VALIDATION_FAILED` and `QUERY_TOO_COMPLEX` (Apollo's names), with `BAD_USER_INPUT`
//! kept for arguments and variables a client got wrong.
//!
//! The cost model: every field costs 1 plus what it selects; a connection costs `first` (20 when
//! absent) times what one of its rows selects, plus [`TOTAL_COUNT`] for a `totalCount`, which
//! reads a whole index range however small the page.
use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Name, Positioned, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation},
    parser::types::{ExecutableDocument, Field, FragmentDefinition, Selection, SelectionSet},
};

use super::pagination::page_cost;

/// What a `totalCount` costs: a count reads an index range the way a page of 100 rows does.
pub const TOTAL_COUNT: usize = 100;

/// The complexity of a connection field (see the module's cost model). `child_complexity` is
/// what async-graphql summed for the selection, `totalCount` included; counts selected directly
/// or in inline fragments are taken out of the per-row part, so they are not multiplied by the
/// page size. One inside a named fragment stays in it: charged too much, never too little.
pub fn connection(field: &Field, first: Option<i32>, child_complexity: usize) -> usize {
    let counts = total_counts_in(&field.selection_set.node);
    let per_row = child_complexity.saturating_sub(counts * TOTAL_COUNT);
    page_cost(first)
        .saturating_mul(per_row)
        .saturating_add(counts * TOTAL_COUNT)
        .saturating_add(1)
}

fn total_counts_in(selection: &SelectionSet) -> usize {
    selection
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => usize::from(field.node.name.node == "totalCount"),
            Selection::InlineFragment(fragment) => {
                total_counts_in(&fragment.node.selection_set.node)
            }
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// The limits async-graphql does not have (aliases per document) and the error codes it does not
/// give, on every operation the schema runs (HTTP and WebSocket alike).
pub struct Limits {
    pub max_aliases: usize,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension {
            max_aliases: self.max_aliases,
        })
    }
}

struct LimitsExtension {
    max_aliases: usize,
}

#[async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await.map_err(|error| {
            // The parse step also enforces nesting and directive limits.
            let code = if is_over_a_limit(&error.message) {
                "QUERY_TOO_COMPLEX"
            } else {
                "GRAPHQL_PARSE_FAILED"
            };
            with_code(error, code)
        })?;
        let aliases = aliases_in(&document);
        if aliases > self.max_aliases {
            return Err(with_code(
                ServerError::new(
                    format!(
                        "the document has {aliases} aliased fields; at most {} are allowed",
                        self.max_aliases
                    ),
                    None,
                ),
                "QUERY_TOO_COMPLEX",
            ));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| {
                    let code = validation_code(&error.message);
                    with_code(error, code)
                })
                .collect()
        })
    }
}

/// async-graphql's own limits, by the messages it words them with.
fn is_over_a_limit(message: &str) -> bool {
    message == "Query is too complex."
        || message == "Query is nested too deep."
        || message.starts_with("The recursion depth of the query cannot be greater than")
        || message.contains("directives")
}

fn validation_code(message: &str) -> &'static str {
    if is_over_a_limit(message) {
        "QUERY_TOO_COMPLEX"
    } else if is_about_a_value(message) {
        "BAD_USER_INPUT"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    }
}

/// A value the client passed (an argument's or a variable's) that does not fit its type: the
/// document is fine, the input is not.
fn is_about_a_value(message: &str) -> bool {
    message.starts_with("Invalid value for argument")
        || message.starts_with("Failed to parse")
        || (message.starts_with("Variable \"") && message.contains("invalid value"))
        || (message.contains("argument") && message.contains("is required"))
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// Aliased fields in the document's operations, each fragment counted where it is spread (a
/// fragment of 10 aliases spread under 30 aliased fields runs 300 times). Fragment cycles are
/// refused by validation, later; here a spread deeper than any real document is simply not
/// followed.
fn aliases_in(document: &ExecutableDocument) -> usize {
    let counter = AliasCounter {
        fragments: &document.fragments,
    };
    document
        .operations
        .iter()
        .map(|(_, operation)| counter.under(&operation.node.selection_set.node, 0))
        .fold(0, usize::saturating_add)
}

struct AliasCounter<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
}

impl AliasCounter<'_> {
    const MAX_SPREAD_DEPTH: usize = 32;

    fn under(&self, selection: &SelectionSet, depth: usize) -> usize {
        if depth > Self::MAX_SPREAD_DEPTH {
            return 0;
        }
        selection
            .items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => usize::from(field.node.alias.is_some())
                    .saturating_add(self.under(&field.node.selection_set.node, depth)),
                Selection::InlineFragment(fragment) => {
                    self.under(&fragment.node.selection_set.node, depth)
                }
                Selection::FragmentSpread(spread) => self
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .map_or(0, |fragment| {
                        self.under(&fragment.node.selection_set.node, depth + 1)
                    }),
            })
            .fold(0, usize::saturating_add)
    }
}
