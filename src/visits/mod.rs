//! Visits: requesting, accepting, completing and cancelling them, with the locks that keep every
//! member's outstanding minutes within their balance. Pays through the ledger; knows no GraphQL.
pub mod entities;
pub mod service;

pub use entities::VisitStatus;
pub use service::*;
