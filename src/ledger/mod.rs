//! Ledger: balances (the only place minutes live). Knows nothing of who users are or what visits are.
pub mod entities;
pub mod service;

pub use service::*;
