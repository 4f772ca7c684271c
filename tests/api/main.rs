//! The service's own tests: real app on port 0, real PostgreSQL, a fresh database per test.
mod helpers;

mod checkers;
mod cli;
mod contract;
mod costs;
mod events;
mod expiry;
mod federation;
mod fuzz;
mod http;
mod identity;
mod logs;
mod metrics;
mod notifications;
mod over_http;
mod pooled;
mod proxies;
mod races;
mod relay;
mod retries;
mod schema;
mod shutdown;
mod subscriptions;
mod tokens;
mod trusted;
mod visits;
