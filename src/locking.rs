//! The row locks that keep minutes exact. Every `SELECT ... FOR UPDATE` on the money paths goes
//! through [`for_update`], so the lock order (docs/architecture.md, "Concurrency") is visible in one place per use.
//!
//! The feature `danger-no-row-locks` builds a binary that skips these locks. It exists only so the
//! integration harness can prove it detects the races they prevent; never enable it elsewhere.
use sea_orm::QuerySelect;

pub const ROW_LOCKS_DISABLED: bool = cfg!(feature = "danger-no-row-locks");

pub fn for_update<Q: QuerySelect>(query: Q) -> Q {
    if ROW_LOCKS_DISABLED {
        query
    } else {
        query.lock_exclusive()
    }
}
