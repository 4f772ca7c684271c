//! The schema: every area's roots merged, with the limits that bound what one request may cost.
use std::sync::Arc;

use async_graphql::{
    MergedObject, ObjectType, Request, Response, Schema, SchemaBuilder, SubscriptionType,
    futures_util::stream::BoxStream,
};

use super::{
    federation::Entities, identity, ledger, limits::Limits, notifications,
    subscriptions::SubscriptionRoot, visits,
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

// `Query` of the subgraph: the same roots, and the entity resolvers behind `_entities`. (A comment,
// not a doc comment: it would become the type's description in the SDL.)
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct SubgraphQueryRoot(
    identity::IdentityQuery,
    visits::VisitsQuery,
    ledger::LedgerQuery,
    notifications::NotificationsQuery,
    Entities,
);

pub type PlainSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;
pub type SubgraphSchema = Schema<SubgraphQueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema an instance serves: the plain API, or the same as a federation subgraph
/// (`FEDERATION`). Two types, since a schema that has entities always answers `_entities`.
#[derive(Clone)]
pub enum AppSchema {
    Plain(PlainSchema),
    Subgraph(SubgraphSchema),
}

impl AppSchema {
    pub async fn execute(&self, request: Request) -> Response {
        match self {
            Self::Plain(schema) => schema.execute(request).await,
            Self::Subgraph(schema) => schema.execute(request).await,
        }
    }

    pub fn execute_stream(&self, request: Request) -> BoxStream<'static, Response> {
        match self {
            Self::Plain(schema) => schema.execute_stream(request),
            Self::Subgraph(schema) => schema.execute_stream(request),
        }
    }
}

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
    if state.config.graphql.federation {
        let builder = Schema::build(
            SubgraphQueryRoot::default(),
            MutationRoot::default(),
            SubscriptionRoot,
        )
        .enable_federation();
        AppSchema::Subgraph(configured(builder, state, depth, complexity))
    } else {
        let builder = Schema::build(
            QueryRoot::default(),
            MutationRoot::default(),
            SubscriptionRoot,
        );
        AppSchema::Plain(configured(builder, state, depth, complexity))
    }
}

/// The limits and services every schema gets, whatever its roots.
fn configured<Query, Mutation, Subscription>(
    builder: SchemaBuilder<Query, Mutation, Subscription>,
    state: Arc<AppState>,
    depth: usize,
    complexity: usize,
) -> Schema<Query, Mutation, Subscription>
where
    Query: ObjectType + 'static,
    Mutation: ObjectType + 'static,
    Subscription: SubscriptionType + 'static,
{
    let mut builder = builder
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

/// The subgraph's SDL, as `_service { sdl }` answers it: what a router composes.
pub fn subgraph_sdl() -> String {
    Schema::build(
        SubgraphQueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .enable_federation()
    .finish()
    .sdl_with_options(
        async_graphql::SDLExportOptions::new()
            .federation()
            .compose_directive(),
    )
}
