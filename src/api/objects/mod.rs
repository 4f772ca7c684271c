//! The object types clients read, shared by every area's queries and mutations.
mod notification;
mod transaction;
mod user;
mod visit;

pub use notification::Notification;
pub use transaction::Transaction;
pub use user::User;
pub use visit::{Visit, VisitStatus};
