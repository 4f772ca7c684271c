//! The schema: every area's roots merged, with the limits that bound what one request may cost.
use std::sync::Arc;

use async_graphql::{MergedObject, Schema};

use super::{identity, ledger, notifications, subscriptions::SubscriptionRoot, visits};
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

/// The schema with its limits and services.
pub fn schema(state: Arc<AppState>) -> AppSchema {
    let config = &state.config;
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .limit_depth(config.graphql_depth_limit)
    .limit_complexity(config.graphql_complexity_limit)
    .limit_recursive_depth(32);
    if !config.introspection_enabled {
        builder = builder.disable_introspection();
    }
    builder.data(state).finish()
}

/// The SDL clients code against; `schema.graphql` at the repo root must equal it.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .finish()
    .sdl()
}
