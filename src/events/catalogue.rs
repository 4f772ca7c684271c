//! Every event the service records, with its payload. Payloads are a weak schema: they carry the
//! state after the change (ids, status, minutes), never personal data, and consumers read only
//! the fields they need. A change that would break a reader gets a new `version`, not an edit.
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Minutes, UserId, VisitId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    UserRegistered,
    UserDeactivated,
    VisitRequested,
    VisitAccepted,
    VisitCompleted,
    VisitCancelled,
    /// A visit's pal left (deleted their account): the visit is open again.
    VisitReleased,
    /// Time ran out on a requested or accepted visit (written by the sweeper).
    VisitExpired,
    LedgerTransferRecorded,
    /// The notifications context told someone something (what, to whom: never the text).
    NotificationAdded,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        Self::UserRegistered,
        Self::UserDeactivated,
        Self::VisitRequested,
        Self::VisitAccepted,
        Self::VisitCompleted,
        Self::VisitCancelled,
        Self::VisitReleased,
        Self::VisitExpired,
        Self::LedgerTransferRecorded,
        Self::NotificationAdded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserRegistered => "user.registered",
            Self::UserDeactivated => "user.deactivated",
            Self::VisitRequested => "visit.requested",
            Self::VisitAccepted => "visit.accepted",
            Self::VisitCompleted => "visit.completed",
            Self::VisitCancelled => "visit.cancelled",
            Self::VisitReleased => "visit.released",
            Self::VisitExpired => "visit.expired",
            Self::LedgerTransferRecorded => "ledger.transfer_recorded",
            Self::NotificationAdded => "notification.added",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.name() == name)
    }

    /// What the event is about; its id is the partition key and `aggregateVersion` counts per it.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Self::UserRegistered | Self::UserDeactivated => "user",
            Self::VisitRequested
            | Self::VisitAccepted
            | Self::VisitCompleted
            | Self::VisitCancelled
            | Self::VisitReleased
            | Self::VisitExpired => "visit",
            Self::LedgerTransferRecorded => "transaction",
            Self::NotificationAdded => "notification",
        }
    }

    /// The version of this type's payload.
    pub fn version(self) -> i32 {
        1
    }
}

/// A payload and the event type it belongs to.
pub trait Payload: Serialize {
    const TYPE: EventType;
    /// The id of the aggregate the event is about.
    fn aggregate_id(&self) -> Uuid;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeactivated {
    pub user_id: Uuid,
}

/// A visit as it stands after the change; every visit event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitState {
    pub visit_id: VisitId,
    pub member_id: UserId,
    pub pal_id: Option<UserId>,
    pub date: NaiveDate,
    pub minutes: Minutes,
    /// `REQUESTED`, `ACCEPTED`, `COMPLETED`, `CANCELLED` or `EXPIRED`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitRequested {
    #[serde(flatten)]
    pub visit: VisitState,
    pub task_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitAccepted {
    #[serde(flatten)]
    pub visit: VisitState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitCompleted {
    #[serde(flatten)]
    pub visit: VisitState,
    /// `REQUESTED` or `ACCEPTED`: whether the visit left the open list with this event.
    pub previous_status: String,
    pub transaction_id: Uuid,
    pub pal_credit: Minutes,
    pub fee: Minutes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitCancelled {
    #[serde(flatten)]
    pub visit: VisitState,
    /// The status the visit was cancelled from.
    pub previous_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitReleased {
    #[serde(flatten)]
    pub visit: VisitState,
    pub previous_pal_id: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisitExpired {
    #[serde(flatten)]
    pub visit: VisitState,
    /// `REQUESTED` or `ACCEPTED`: the status time ran out in.
    pub previous_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRecorded {
    pub transaction_id: Uuid,
    pub visit_id: VisitId,
    pub member_id: UserId,
    pub pal_id: UserId,
    pub minutes: Minutes,
    pub pal_credit: Minutes,
    pub fee: Minutes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationAdded {
    pub notification_id: Uuid,
    pub recipient_id: Uuid,
    /// The notification's kind (`VISIT_ACCEPTED`, `MINUTES_EARNED`, ...).
    pub kind: String,
}

macro_rules! payload {
    ($type:ident, $variant:ident, |$this:ident| $id:expr) => {
        impl Payload for $type {
            const TYPE: EventType = EventType::$variant;
            fn aggregate_id(&self) -> Uuid {
                let $this = self;
                $id
            }
        }
    };
}

payload!(UserRegistered, UserRegistered, |this| this.user_id);
payload!(UserDeactivated, UserDeactivated, |this| this.user_id);
payload!(VisitRequested, VisitRequested, |this| this.visit.visit_id.0);
payload!(VisitAccepted, VisitAccepted, |this| this.visit.visit_id.0);
payload!(VisitCompleted, VisitCompleted, |this| this.visit.visit_id.0);
payload!(VisitCancelled, VisitCancelled, |this| this.visit.visit_id.0);
payload!(VisitReleased, VisitReleased, |this| this.visit.visit_id.0);
payload!(VisitExpired, VisitExpired, |this| this.visit.visit_id.0);
payload!(TransferRecorded, LedgerTransferRecorded, |this| this
    .transaction_id);
payload!(NotificationAdded, NotificationAdded, |this| this
    .notification_id);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_reads_back_as_itself() {
        for event_type in EventType::ALL {
            assert_eq!(EventType::from_name(event_type.name()), Some(event_type));
        }
        assert_eq!(EventType::from_name("visit.teleported"), None);
    }
}
