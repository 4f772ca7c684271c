//! Notifications: a read model fed only by events. It knows nothing of the visits' or the ledger's
//! tables: it learns from `visit.*` and `ledger.*` events, keeps ids and minutes, and leaves names to
//! be looked up at read time.
pub mod handler;
pub mod service;

pub use handler::NotificationsHandler;
pub use service::*;
