//! Running one GraphQL request over HTTP: its persisted document, its parsed document from the
//! store, the schema its operation calls for, its trace, and what it tells the metrics.
use async_graphql::{
    Request, Response,
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    },
};
use axum::http::HeaderMap;

use super::{
    context::ApiError,
    documents::Unkept,
    errors::{ErrorCode, error_code, with_error_codes},
    input, negotiation,
    persisted::Refused,
    request_data,
    state::ApiState,
    variables,
};
use crate::events::trace;

/// Runs the request with its W3C `traceparent` (if valid) current, so the events it records carry
/// it; every error in the answer has a code.
pub async fn execute(state: &ApiState, headers: &HeaderMap, mut request: Request) -> Response {
    if let Err(refused) = state.persisted.resolve(&mut request) {
        return refused_document(state, refused);
    }
    let unkept = state.documents.attach(&mut request);
    execute_parsed(state, headers, request, unkept).await
}

/// The answer to a document the persisted queries refused (unknown, or not a trusted one); with
/// trusted documents, counted as a rejected operation by its code.
pub fn refused_document(state: &ApiState, refused: Refused) -> Response {
    if state.persisted.is_trusted() {
        state.app.metrics.rejected(refused.code.as_str());
    }
    Response::from_errors(vec![refused.into_server_error()])
}

/// [`execute`] for a request already given its parsed document; keeps the document if it was
/// parsed for this request and the request shows it was accepted.
pub async fn execute_parsed(
    state: &ApiState,
    headers: &HeaderMap,
    mut request: Request,
    unkept: Option<Unkept>,
) -> Response {
    if let Err(refused) = input::check(&mut request) {
        let error: async_graphql::Error = ApiError::from(refused).into();
        return with_error_codes(Response::from_errors(vec![
            error.into_server_error(Default::default()),
        ]));
    }
    if let Err(missing) = variables::check_required(&mut request) {
        state.app.metrics.rejected(ErrorCode::BadUserInput.as_str());
        return Response::from_errors(missing);
    }
    let schema = match &state.introspection_schema {
        Some(introspection) if reads_only_the_schema(&mut request) => introspection,
        _ => &state.schema,
    };
    let operation_name = request.operation_name.clone();
    tracing::Span::current().record(
        "operation",
        operation_name.as_deref().unwrap_or("anonymous"),
    );
    let started = std::time::Instant::now();
    let traceparent = request_data::traceparent(headers);
    let response =
        with_error_codes(trace::with_traceparent(traceparent, schema.execute(request)).await);
    let first_error = response.errors.first().map(error_code);
    state.app.metrics.operation(
        operation_name.as_deref(),
        negotiation::ran(&response),
        first_error.map_or("ok", ErrorCode::as_str),
        started.elapsed(),
    );
    if let Some(unkept) = unkept
        && !response.errors.iter().any(|error| {
            matches!(
                error_code(error),
                ErrorCode::GraphqlParseFailed
                    | ErrorCode::GraphqlValidationFailed
                    | ErrorCode::QueryTooComplex
            )
        })
    {
        state.documents.keep(unkept);
    }
    response
}

/// The operation a request runs, by GraphQL's rule: the one named, else the document's only one.
/// A document of several operations and no name runs none, nor does a name the document does not
/// hold (async-graphql refuses both alike).
pub fn operation_to_run<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), None) => operation,
        (DocumentOperations::Single(_), Some(_)) => return None,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        (DocumentOperations::Multiple(_), None) => return None,
    };
    Some(&operation.node)
}

/// Whether the request's operation is a mutation (which GET must not run).
pub fn runs_a_mutation(request: &mut Request) -> bool {
    let name = request.operation_name.clone();
    request.parsed_query().is_ok_and(|document| {
        operation_to_run(document, name.as_deref())
            .is_some_and(|operation| operation.ty == OperationType::Mutation)
    })
}

/// Whether the operation to run selects only `__schema`, `__type` and `__typename` at its root
/// (GraphiQL's docs, codegen, IDE plugins). Anything else, or a document that does not parse,
/// goes to the data schema and its limits.
fn reads_only_the_schema(request: &mut Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let Some(operation) = operation_to_run(document, name.as_deref()) else {
        return false;
    };
    let roots = &operation.selection_set.node.items;
    operation.ty == OperationType::Query
        && !roots.is_empty()
        && roots.iter().all(|selection| match &selection.node {
            Selection::Field(field) => field.node.name.node.starts_with("__"),
            _ => false,
        })
}
