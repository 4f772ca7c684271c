//! home-visits: a GraphQL service for booking home visits paid in minutes.
//!
//! Three bounded contexts hold the domain (`identity`, `ledger`, and, with the visits issue,
//! `visits`); `api` composes them into the GraphQL schema.
pub mod api;
pub mod config;
pub mod db;
pub mod error;
pub mod identity;
pub mod ledger;
pub mod locking;
pub mod startup;
pub mod telemetry;
pub mod visits;
