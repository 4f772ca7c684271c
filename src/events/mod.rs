//! Domain events. A context that changes state records what happened with [`record`], in the
//! same transaction; the outbox table is the durable, ordered log of them ([`log`]); the
//! [`relay`] publishes it to NATS JetStream when one is configured; [`consumer`] and
//! [`consumers`] are what every reader of the log (such as notifications) is built from. No
//! context is imported here: events depend on nothing but the database.
pub mod broadcast;
pub mod broker;
pub mod catalogue;
pub mod consumer;
pub mod consumers;
pub mod feed;
pub mod leader;
pub mod log;
pub mod outbox;
pub mod relay;
pub mod retention;
pub mod stretch;
pub mod trace;

pub use catalogue::{EventType, Payload};
pub use log::{LogPosition, StoredEvent};
pub use outbox::{NewEvent, OutboxInsert, record, record_all};
