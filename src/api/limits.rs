//! What one operation may cost, decided before any resolver runs (so before any SQL), and the
//! codes clients expect when a document is refused: `GRAPHQL_PARSE_FAILED`,
//! `GRAPHQL_VALIDATION_FAILED` and `QUERY_TOO_COMPLEX` (Apollo's names), with `BAD_USER_INPUT`
//! kept for arguments and variables a client got wrong.
//!
//! The cost model: every field costs 1 plus what it selects; a connection costs `first` (20 when
//! absent) times what one of its rows selects, plus [`TOTAL_COUNT`] for a `totalCount`, which
//! reads a whole index range however small the page.
use std::{cell::RefCell, collections::HashMap, sync::Arc};

use async_graphql::{
    Name, Positioned, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation},
    parser::types::{ExecutableDocument, Field, FragmentDefinition, Selection, SelectionSet},
};

use super::{errors::ErrorCode, pagination::page_cost};

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
                ErrorCode::QueryTooComplex
            } else {
                ErrorCode::GraphqlParseFailed
            };
            with_code(short_syntax_error(error, query), code)
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
                ErrorCode::QueryTooComplex,
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

/// Longest message a syntax error keeps whole; a longer one is cut to an excerpt.
const SYNTAX_ERROR_BYTES: usize = 300;
/// Characters an excerpt shows on each side of the error's position.
const EXCERPT_CHARS: usize = 40;

/// The parser quotes the whole line an error is on, which for a document of one long line is the
/// document: a 60 KB query would come back as a 60 KB error. A long message is rewritten as what
/// was expected, where, and an excerpt around that place.
fn short_syntax_error(mut error: ServerError, query: &str) -> ServerError {
    if error.message.len() <= SYNTAX_ERROR_BYTES {
        return error;
    }
    let expected = error
        .message
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("= "))
        .unwrap_or("syntax error")
        .to_string();
    let place = error.locations.first().map(|position| {
        let excerpt = query
            .lines()
            .nth(position.line.saturating_sub(1))
            .map(|line| excerpt(line, position.column.saturating_sub(1)))
            .unwrap_or_default();
        format!(
            " at line {}, column {}, near `{excerpt}`",
            position.line, position.column
        )
    });
    let mut message = format!("{expected}{}", place.unwrap_or_default());
    if message.len() > SYNTAX_ERROR_BYTES {
        let mut end = SYNTAX_ERROR_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    error.message = message;
    error
}

/// Up to [`EXCERPT_CHARS`] characters of `line` on each side of character `column`.
fn excerpt(line: &str, column: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    let start = column.saturating_sub(EXCERPT_CHARS);
    let end = column.saturating_add(EXCERPT_CHARS).min(chars.len());
    let mut shown: String = chars.get(start..end).unwrap_or_default().iter().collect();
    if start > 0 {
        shown.insert(0, '…');
    }
    if end < chars.len() {
        shown.push('…');
    }
    shown
}

/// async-graphql's own limits, by the messages it words them with.
fn is_over_a_limit(message: &str) -> bool {
    message == "Query is too complex."
        || message == "Query is nested too deep."
        || message.starts_with("The recursion depth of the query cannot be greater than")
        || message.contains("directives")
}

fn validation_code(message: &str) -> ErrorCode {
    if is_over_a_limit(message) {
        ErrorCode::QueryTooComplex
    } else if is_about_a_value(message) {
        ErrorCode::BadUserInput
    } else {
        ErrorCode::GraphqlValidationFailed
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

fn with_code(mut error: ServerError, code: ErrorCode) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code.as_str());
    }
    error
}

/// Aliased fields in the document's operations, each fragment counted where it is spread (a
/// fragment of 10 aliases spread under 30 aliased fields runs 300 times). Each fragment is counted
/// once and remembered, so the work is bounded by the document's size however its fragments spread
/// one another; a fragment that spreads itself (which validation refuses later) counts as nothing
/// where it recurs.
fn aliases_in(document: &ExecutableDocument) -> usize {
    let counter = AliasCounter {
        fragments: &document.fragments,
        counted: RefCell::default(),
    };
    document
        .operations
        .iter()
        .map(|(_, operation)| counter.under(&operation.node.selection_set.node))
        .fold(0, usize::saturating_add)
}

struct AliasCounter<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// Per fragment: `None` while it is being counted (a cycle), then its count.
    counted: RefCell<HashMap<&'a Name, Option<usize>>>,
}

impl<'a> AliasCounter<'a> {
    fn under(&self, selection: &'a SelectionSet) -> usize {
        selection
            .items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => usize::from(field.node.alias.is_some())
                    .saturating_add(self.under(&field.node.selection_set.node)),
                Selection::InlineFragment(fragment) => {
                    self.under(&fragment.node.selection_set.node)
                }
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node),
            })
            .fold(0, usize::saturating_add)
    }

    fn fragment(&self, name: &'a Name) -> usize {
        if let Some(known) = self.counted.borrow().get(name) {
            return known.unwrap_or(0);
        }
        let Some((name, fragment)) = self.fragments.get_key_value(name) else {
            return 0;
        };
        self.counted.borrow_mut().insert(name, None);
        let count = self.under(&fragment.node.selection_set.node);
        self.counted.borrow_mut().insert(name, Some(count));
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(document: &str) -> usize {
        aliases_in(&async_graphql::parser::parse_query(document).expect("a document"))
    }

    #[test]
    fn fragments_count_where_they_are_spread() {
        assert_eq!(
            aliases("{ a: me { ...F } b: me { ...F } } fragment F on User { x: id y: id }"),
            6
        );
    }

    #[test]
    fn fragments_that_spread_themselves_are_counted_in_linear_time() {
        // Followed naively, this is 2^40 spreads.
        let mut document = String::from("query { ...F0 }");
        for n in 0..40 {
            document.push_str(&format!(
                " fragment F{n} on Query {{ a{n}: __typename ...F{next} ...F{next} }}",
                next = n + 1
            ));
        }
        document.push_str(" fragment F40 on Query { ...F0 ...F40 }");
        let started = std::time::Instant::now();
        assert!(aliases(&document) > 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
