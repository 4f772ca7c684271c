//! Visits: requesting, accepting, completing and cancelling them, with the locks that keep every
//! member's outstanding minutes within their balance. Pays through the ledger; knows no GraphQL.
pub mod changes;
mod deadlines;
pub mod entities;
pub mod lifecycle;
pub mod queries;
pub mod requesting;
mod sweeper;

pub use deadlines::Deadlines;
pub use entities::VisitStatus;
pub use lifecycle::{accept_visit, cancel_visit, complete_visit, withdraw_user};
pub use queries::*;
pub use requesting::{TaskRequest, VisitRequest, request_visit};
pub use sweeper::expire_due;
