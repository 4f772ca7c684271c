//! The values the contexts hand each other on the money path: whose, which visit, how many
//! minutes. Each is its own type, so arguments given in the wrong order do not compile, and each
//! is a column type (sea-orm's `DeriveValueType`), so rows carry them too, and reads and writes
//! as the bare value in JSON (events keep their shape).
use std::fmt;

use sea_orm::DeriveValueType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id newtype: shown, converted back and used as a key like the `Uuid` it holds.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveValueType, Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for Uuid {
            fn from($name(id): $name) -> Self {
                id
            }
        }

        // Ids are made by the service, never by the database: like `Uuid`, they have no number
        // to come from.
        impl sea_orm::TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, sea_orm::DbErr> {
                Err(sea_orm::DbErr::ConvertFromU64(stringify!($name)))
            }
        }
    };
}

id!(
    /// A user: a member when they ask for visits, a pal when they make them.
    UserId
);
id!(
    /// A visit.
    VisitId
);

/// A number of minutes: a balance, a visit's length, a credit or a fee.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    DeriveValueType,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Minutes(pub i32);

impl fmt::Display for Minutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Minutes> for i32 {
    fn from(Minutes(minutes): Minutes) -> Self {
        minutes
    }
}

impl std::ops::Add for Minutes {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self(self.0 + other.0)
    }
}

impl std::ops::Sub for Minutes {
    type Output = Self;

    fn sub(self, other: Self) -> Self {
        Self(self.0 - other.0)
    }
}
