//! The one rule every string a client sends must keep, checked once at the boundary, before any
//! resolver runs: no control characters but tab, line feed and carriage return. PostgreSQL cannot
//! store NUL in text at all, and the other C0 controls and DEL have no place in names, tasks,
//! keys or ids; refusing them (rather than stripping) means nothing accepted is stored differently
//! from what was sent.
use async_graphql::{
    Name, Request, Value,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

use crate::error::{AppError, FieldErrors};

const MESSAGE: &str =
    "must not contain control characters (tab, line feed and carriage return are allowed)";

/// Whether `c` is refused in any string input.
pub fn is_refused(c: char) -> bool {
    (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')) || ('\u{80}'..='\u{9f}').contains(&c)
}

/// `BAD_USER_INPUT` naming every argument or variable (by its path) that breaks the rule.
pub fn check(request: &mut Request) -> Result<(), AppError> {
    let mut fields = FieldErrors::new();
    for (name, value) in request.variables.iter() {
        check_value(name.as_str(), value, &mut fields);
    }
    if let Ok(document) = request.parsed_query() {
        check_document(document, &mut fields);
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(AppError::BadUserInput { fields })
    }
}

fn check_value(path: &str, value: &Value, fields: &mut FieldErrors) {
    match value {
        Value::String(text) if text.chars().any(is_refused) => {
            fields
                .entry(path.to_string())
                .or_default()
                .push(MESSAGE.to_string());
        }
        Value::List(items) => {
            for (index, item) in items.iter().enumerate() {
                check_value(&format!("{path}.{index}"), item, fields);
            }
        }
        Value::Object(entries) => {
            for (key, item) in entries {
                check_value(&format!("{path}.{key}"), item, fields);
            }
        }
        _ => {}
    }
}

/// Strings written into the document itself (arguments given inline rather than as variables).
fn check_document(document: &ExecutableDocument, fields: &mut FieldErrors) {
    for (_, operation) in document.operations.iter() {
        check_selections(&operation.node.selection_set.node, fields);
    }
    for fragment in document.fragments.values() {
        check_selections(&fragment.node.selection_set.node, fields);
    }
}

fn check_selections(selections: &SelectionSet, fields: &mut FieldErrors) {
    for selection in &selections.items {
        match &selection.node {
            Selection::Field(field) => {
                for (name, value) in &field.node.arguments {
                    // Variables were checked with the request's variables; literals are here.
                    let literal = value
                        .node
                        .clone()
                        .into_const_with(|_: Name| Ok::<_, ()>(Value::Null));
                    if let Ok(literal) = literal {
                        check_value(name.node.as_str(), &literal, fields);
                    }
                }
                check_selections(&field.node.selection_set.node, fields);
            }
            Selection::InlineFragment(fragment) => {
                check_selections(&fragment.node.selection_set.node, fields);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_other_controls_are_refused_but_common_whitespace_is_not() {
        for refused in [
            '\0', '\u{1}', '\u{8}', '\u{b}', '\u{1b}', '\u{7f}', '\u{85}',
        ] {
            assert!(is_refused(refused), "{refused:?}");
        }
        for allowed in ['\t', '\n', '\r', ' ', 'é', '€', '\u{a0}'] {
            assert!(!is_refused(allowed), "{allowed:?}");
        }
    }

    #[test]
    fn variables_and_inline_arguments_are_named_by_their_path() {
        let mut request = Request::new(
            r#"mutation($input: RequestVisitInput!) { requestVisit(input: $input) { id } acceptVisit(id: "a\u0000b") { id } }"#,
        )
        .variables(async_graphql::Variables::from_json(serde_json::json!({
            "input": { "tasks": [{ "name": "ok" }, { "name": "bad\u{0}" }], "idempotencyKey": "k\u{1}" }
        })));
        let Err(AppError::BadUserInput { fields }) = check(&mut request) else {
            panic!("refused input accepted");
        };
        let named: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(named, ["id", "input.idempotencyKey", "input.tasks.1.name"]);
    }
}
