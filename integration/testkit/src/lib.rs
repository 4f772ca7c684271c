//! What home-visits' own tests and its harness share, without the harness's reporting and
//! charting: a typed GraphQL client ([`client`]) whose replies read by path ([`reply`]), a
//! WebSocket client ([`live`]), the books' invariants ([`invariants`]) and the event stream's
//! ([`stream`]), instances, brokers, poolers and database clusters started as processes
//! ([`instances`], [`nats`], [`nats_cluster`], [`pgbouncer`], [`pg_cluster`]), and waiting on a
//! condition with a deadline ([`eventually`]).
pub mod client;
pub mod instances;
pub mod invariants;
pub mod live;
pub mod nats;
pub mod nats_cluster;
pub mod pg_cluster;
pub mod pgbouncer;
pub mod reply;
mod servers;
pub mod stream;
mod waiting;

pub use waiting::{eventually, within};
