//! The GraphQL adapter: composes the contexts into one schema and serves it over axum.
mod client_address;
mod context;
mod documents;
mod graphiql;
mod http;
mod identity;
mod input;
mod ledger;
mod limits;
mod loaders;
mod negotiation;
mod notifications;
mod objects;
mod pagination;
mod persisted;
mod scalars;
mod schema;
mod subscriptions;
mod visits;
mod websocket;

pub use context::RequestContext;
pub use http::{Routers, routers};
pub use schema::{AppSchema, MutationRoot, QueryRoot, schema, sdl};
