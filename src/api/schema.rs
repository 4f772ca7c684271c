//! The schema: every area's roots merged, with the limits that bound what one request may cost.
use std::sync::Arc;

use async_graphql::{MergedObject, Schema};

use super::{
    identity, ledger, limits::Limits, notifications, subscriptions::SubscriptionRoot, visits,
};
use crate::state::AppState;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    identity::IdentityQuery,
    visits::VisitsQuery,
    ledger::LedgerQuery,
    notifications::NotificationsQuery,
);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    identity::IdentityMutation,
    visits::VisitsMutation,
    notifications::NotificationsMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Limits for an operation that reads only the schema (`__schema`, `__type`). The standard
/// introspection query is 13 levels deep (its `TypeRef` fragment nests `ofType` nine times), past
/// the limit meant for data; these still bound a crafted deeper one.
pub const INTROSPECTION_DEPTH_LIMIT: usize = 20;
pub const INTROSPECTION_COMPLEXITY_LIMIT: usize = 5_000;

/// The schema with its limits and services.
pub fn schema(state: Arc<AppState>) -> AppSchema {
    let depth = state.config.graphql.depth_limit;
    let complexity = state.config.graphql.complexity_limit;
    build(state, depth, complexity)
}

/// The same schema with the introspection limits, for operations that read only the schema
/// (`None` when introspection is off: those operations then go to [`schema`], which refuses them).
pub fn introspection_schema(state: Arc<AppState>) -> Option<AppSchema> {
    state.config.graphql.introspection.then(|| {
        build(
            state,
            INTROSPECTION_DEPTH_LIMIT,
            INTROSPECTION_COMPLEXITY_LIMIT,
        )
    })
}

fn build(state: Arc<AppState>, depth: usize, complexity: usize) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .extension(Limits {
        max_aliases: state.config.graphql.max_aliases,
    })
    .limit_depth(depth)
    .limit_complexity(complexity)
    .limit_recursive_depth(32);
    if !state.config.graphql.introspection {
        builder = builder.disable_introspection();
    }
    builder.data(state).finish()
}

/// The SDL clients code against; `schema.graphql` at the repo root must equal it. Scalars carry
/// `@specifiedBy`, so codegen and IDEs know `Date` and `DateTime` without a hand-written mapping.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .finish()
    .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}
