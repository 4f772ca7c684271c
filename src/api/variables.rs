//! Variables the operation requires and the request does not give. async-graphql runs such an
//! operation (a `@skip(if: $s)` with `$s` missing reads as not skipped) or fails only the field
//! that reads it; the specification makes it a request error: no `data`, the variable named,
//! `BAD_USER_INPUT`. Checked here, on both transports, before anything runs.
use async_graphql::{Name, Pos, Request, ServerError, Value};

use super::{
    errors::{ErrorCode, server_error},
    execution::operation_to_run,
};

/// The request's non-null variables that it leaves out (when they have no default) or sends as
/// `null` (default or not), one error each. A document that does not parse is left to execution
/// to refuse.
pub fn check_required(request: &mut Request) -> Result<(), Vec<ServerError>> {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let Some(operation) = operation_to_run(document, name.as_deref()) else {
        return Ok(());
    };
    // Most operations declare none: nothing is copied for them.
    let non_null: Vec<(Name, String, bool, Pos)> = operation
        .variable_definitions
        .iter()
        .filter(|definition| !definition.node.var_type.node.nullable)
        .map(|definition| {
            (
                definition.node.name.node.clone(),
                definition.node.var_type.node.to_string(),
                definition.node.default_value.is_some(),
                definition.pos,
            )
        })
        .collect();
    let errors: Vec<ServerError> = non_null
        .into_iter()
        .filter_map(|(variable, required, has_default, position)| {
            let problem = match request.variables.get(&variable) {
                None if !has_default => "was not provided",
                Some(Value::Null) => "must not be null",
                _ => return None,
            };
            let mut error = server_error(
                ErrorCode::BadUserInput,
                format!("Variable \"${variable}\" of required type \"{required}\" {problem}."),
            );
            error.locations = vec![position];
            Some(error)
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::Variables;

    use super::*;

    fn refused(query: &str, variables: serde_json::Value) -> Vec<String> {
        let mut request = Request::new(query).variables(Variables::from_json(variables));
        match check_required(&mut request) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|error| error.message).collect(),
        }
    }

    #[test]
    fn a_required_variable_must_be_given_and_not_null() {
        let query = "query($s: Boolean!, $n: Int, $d: Int! = 3) { me @skip(if: $s) { id } }";
        assert_eq!(
            refused(query, serde_json::json!({})),
            ["Variable \"$s\" of required type \"Boolean!\" was not provided."]
        );
        assert_eq!(
            refused(query, serde_json::json!({ "s": null })),
            ["Variable \"$s\" of required type \"Boolean!\" must not be null."]
        );
        assert!(refused(query, serde_json::json!({ "s": true })).is_empty());
        // A default fills in for an absent value, not for an explicit null.
        assert_eq!(
            refused(query, serde_json::json!({ "s": true, "d": null })),
            ["Variable \"$d\" of required type \"Int!\" must not be null."]
        );
    }

    #[test]
    fn only_the_operation_that_runs_is_checked() {
        let query = "query A($i: ID!) { visit(id: $i) { id } } query B { me { id } }";
        let mut named = Request::new(query).operation_name("B");
        assert!(check_required(&mut named).is_ok());
        let mut other = Request::new(query).operation_name("A");
        assert!(check_required(&mut other).is_err());
    }
}
