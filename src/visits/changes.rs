//! What a visit event means to someone watching live: which visit, its state after the change,
//! and whether that person could see it (or find it in the open list) before and after. Read from
//! the event's payload alone, through only the fields needed here (a weak schema), so watching
//! costs no query per event.
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::ActiveEnum;
use serde::Deserialize;
use uuid::Uuid;

use super::entities::{VisitStatus, visit};
use crate::{
    domain::{Minutes, UserId, VisitId},
    events::StoredEvent,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Requested,
    Accepted,
    Completed,
    Cancelled,
    /// Its pal left; it is open again.
    Released,
    /// Its time ran out.
    Expired,
}

impl ChangeKind {
    fn of(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "visit.requested" => Self::Requested,
            "visit.accepted" => Self::Accepted,
            "visit.completed" => Self::Completed,
            "visit.cancelled" => Self::Cancelled,
            "visit.released" => Self::Released,
            "visit.expired" => Self::Expired,
            _ => return None,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Facts {
    visit_id: VisitId,
    member_id: UserId,
    pal_id: Option<UserId>,
    date: NaiveDate,
    minutes: Minutes,
    status: String,
    previous_status: Option<String>,
    previous_pal_id: Option<UserId>,
}

/// One change to one visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitChange {
    pub event_id: Uuid,
    pub kind: ChangeKind,
    pub occurred_at: DateTime<Utc>,
    pub visit_id: VisitId,
    pub member_id: UserId,
    pub pal_id: Option<UserId>,
    pub date: NaiveDate,
    pub minutes: Minutes,
    pub status: VisitStatus,
    status_before: Option<VisitStatus>,
    pal_before: Option<UserId>,
}

impl VisitChange {
    /// `None` for events about anything but a visit, and for a payload this version cannot read
    /// (logged: a subscriber misses that change rather than the feed stopping).
    pub fn from_event(event: &StoredEvent) -> Option<Self> {
        let kind = ChangeKind::of(&event.event_type)?;
        // Read straight from the shared event (every subscriber reads each one): no copy of it.
        let facts = match Facts::deserialize(&event.payload) {
            Ok(facts) => facts,
            Err(error) => {
                tracing::warn!(event = %event.id, %error, "unreadable visit event skipped by live updates");
                return None;
            }
        };
        let status = VisitStatus::try_from_value(&facts.status).ok()?;
        let previous = facts
            .previous_status
            .as_deref()
            .and_then(|status| VisitStatus::try_from_value(&status.to_string()).ok());
        let (status_before, pal_before) = match kind {
            ChangeKind::Requested => (None, None),
            ChangeKind::Accepted => (Some(VisitStatus::Requested), None),
            ChangeKind::Released => (Some(VisitStatus::Accepted), facts.previous_pal_id),
            // Completed straight from REQUESTED had no pal before; from ACCEPTED, the same one.
            ChangeKind::Completed | ChangeKind::Cancelled | ChangeKind::Expired => (
                previous,
                facts
                    .pal_id
                    .filter(|_| previous != Some(VisitStatus::Requested)),
            ),
        };
        Some(Self {
            event_id: event.id,
            kind,
            occurred_at: event.occurred_at,
            visit_id: facts.visit_id,
            member_id: facts.member_id,
            pal_id: facts.pal_id,
            date: facts.date,
            minutes: facts.minutes,
            status,
            status_before,
            pal_before,
        })
    }

    /// The query rule ([`super::may_see`]) applied to the state after the change.
    pub fn is_visible_to(&self, viewer: UserId) -> bool {
        super::may_see(viewer, self.member_id, self.pal_id, Some(self.status))
    }

    /// The same rule applied to the state before it.
    pub fn was_visible_to(&self, viewer: UserId) -> bool {
        super::may_see(viewer, self.member_id, self.pal_before, self.status_before)
    }

    /// The viewer is (or, until this change, was) the visit's member or pal.
    pub fn concerns(&self, user: UserId) -> bool {
        self.member_id == user || self.pal_id == Some(user) || self.pal_before == Some(user)
    }

    /// Whether the visit is in `viewer`'s open list (requested by someone else, not in the past)
    /// before and after the change.
    pub fn open_list(&self, viewer: UserId, today: NaiveDate) -> (bool, bool) {
        let open = |status: Option<VisitStatus>| {
            status == Some(VisitStatus::Requested) && self.member_id != viewer && self.date >= today
        };
        (open(self.status_before), open(Some(self.status)))
    }

    /// The visit as it stands after the change, on top of the row's fields events do not carry.
    pub fn applied_to(&self, row: Option<visit::Model>) -> visit::Model {
        let mut model = row.unwrap_or(visit::Model {
            id: self.visit_id,
            member_id: self.member_id,
            pal_id: None,
            date: self.date,
            minutes: self.minutes,
            status: self.status,
            idempotency_key: None,
            idempotency_fingerprint: None,
            created_at: self.occurred_at,
            updated_at: self.occurred_at,
        });
        model.pal_id = self.pal_id;
        model.status = self.status;
        model.date = self.date;
        model.minutes = self.minutes;
        model.updated_at = self.occurred_at;
        model
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(event_type: &str, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            version: 1,
            aggregate_type: "visit".into(),
            aggregate_id: Uuid::nil(),
            aggregate_version: 1,
            occurred_at: Utc::now(),
            traceparent: None,
            payload,
            position: 1,
            txid: 1,
        }
    }

    fn someone() -> UserId {
        UserId(Uuid::new_v4())
    }

    const TODAY: &str = "2026-12-01";

    fn today() -> NaiveDate {
        TODAY.parse().unwrap_or_default()
    }

    #[test]
    fn an_acceptance_takes_the_visit_out_of_other_pals_open_lists() {
        let (member, pal, other) = (someone(), someone(), someone());
        let change = VisitChange::from_event(&event(
            "visit.accepted",
            json!({ "visitId": Uuid::new_v4(), "memberId": member, "palId": pal,
                    "date": "2026-12-02", "minutes": 30, "status": "ACCEPTED" }),
        ));
        let Some(change) = change else {
            panic!("a readable acceptance")
        };
        assert_eq!(change.open_list(other, today()), (true, false));
        assert!(change.was_visible_to(other) && !change.is_visible_to(other));
        assert!(change.is_visible_to(pal) && change.concerns(pal));
        assert!(!change.concerns(other));
        assert_eq!(
            change.open_list(member, today()),
            (false, false),
            "never one's own"
        );
    }

    #[test]
    fn a_completion_straight_from_requested_had_no_pal_before() {
        let (member, pal) = (someone(), someone());
        let Some(change) = VisitChange::from_event(&event(
            "visit.completed",
            json!({ "visitId": Uuid::new_v4(), "memberId": member, "palId": pal,
                    "date": "2026-12-02", "minutes": 30, "status": "COMPLETED",
                    "previousStatus": "REQUESTED", "transactionId": Uuid::new_v4(),
                    "palCredit": 26, "fee": 4 }),
        )) else {
            panic!("a readable completion")
        };
        assert_eq!(change.open_list(someone(), today()), (true, false));
        assert_eq!(change.open_list(pal, today()), (true, false));
        assert!(change.is_visible_to(pal));
    }

    #[test]
    fn a_release_reopens_the_visit_and_still_concerns_the_pal_who_left() {
        let (member, pal) = (someone(), someone());
        let Some(change) = VisitChange::from_event(&event(
            "visit.released",
            json!({ "visitId": Uuid::new_v4(), "memberId": member, "palId": null,
                    "date": "2026-12-02", "minutes": 30, "status": "REQUESTED",
                    "previousPalId": pal }),
        )) else {
            panic!("a readable release")
        };
        assert!(change.concerns(pal));
        assert_eq!(change.open_list(someone(), today()), (false, true));
    }

    #[test]
    fn a_past_visit_is_in_no_open_list_and_other_events_are_not_changes() {
        let Some(change) = VisitChange::from_event(&event(
            "visit.requested",
            json!({ "visitId": Uuid::new_v4(), "memberId": Uuid::new_v4(), "palId": null,
                    "date": "2026-11-30", "minutes": 30, "status": "REQUESTED", "taskCount": 1 }),
        )) else {
            panic!("a readable request")
        };
        assert_eq!(change.open_list(someone(), today()), (false, false));
        assert_eq!(
            VisitChange::from_event(&event("user.registered", json!({ "userId": Uuid::nil() }))),
            None
        );
        assert_eq!(
            VisitChange::from_event(&event("visit.accepted", json!({ "visitId": "no" }))),
            None
        );
    }
}
