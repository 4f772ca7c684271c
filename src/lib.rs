//! home-visits: a GraphQL service for booking home visits paid in minutes.
//!
//! Three bounded contexts hold the domain, none of them aware of GraphQL: `identity` (users,
//! sessions, credentials), `ledger` (balances and transactions: the only place minutes live) and
//! `visits` (which pays through the ledger). `api` composes them into the GraphQL schema.
pub mod api;
pub mod background;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod identity;
pub mod ledger;
pub mod local_postgres;
pub mod locking;
pub mod metrics;
pub mod notifications;
pub mod paging;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod visits;
