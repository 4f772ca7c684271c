//! Identity: users, sessions, passwords and tokens. Knows nothing of minutes or visits.
pub mod entities;
pub mod password;
pub mod revoked_sessions;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

pub use password::PasswordHasher;
pub use revoked_sessions::RevokedSessions;
pub use sessions::{Identity, SessionTokens, SignedIn};
pub use throttle::LoginThrottle;
pub use tokens::{AccessClaims, TokenKeys};
pub use users::*;

/// The authenticated user behind a request, and the session their access token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: crate::domain::UserId,
    pub session_id: uuid::Uuid,
}
