//! Time in a visit's life. A request leaves the open list once its date has
//! passed; it can still be completed until the end of its date plus the grace days (UTC), and
//! after that it is expired. That rule is applied wherever visits are read, so nothing waits for
//! the sweeper: the sweeper only writes down what the rule already says, and records the event.
use chrono::{Days, NaiveDate, Utc};

use super::entities::{VisitStatus, visit};

/// "Today" and what follows from it, fixed for one request so every read in it agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Today in UTC: the open list holds requests dated today or later.
    pub today: NaiveDate,
    /// A requested or accepted visit dated before this has expired.
    pub expired_before: NaiveDate,
}

impl Deadlines {
    pub fn now(grace_days: u32) -> Self {
        Self::on(Utc::now().date_naive(), grace_days)
    }

    pub fn on(today: NaiveDate, grace_days: u32) -> Self {
        Self {
            today,
            expired_before: today
                .checked_sub_days(Days::new(u64::from(grace_days)))
                .unwrap_or(NaiveDate::MIN),
        }
    }

    /// The status a visit stored as `status` on `date` has today.
    pub fn status_of(&self, status: VisitStatus, date: NaiveDate) -> VisitStatus {
        if VisitStatus::OUTSTANDING.contains(&status) && date < self.expired_before {
            VisitStatus::Expired
        } else {
            status
        }
    }

    /// The visit as it stands today (its stored status may be one the sweeper has not yet written).
    pub fn settle(&self, mut visit: visit::Model) -> visit::Model {
        visit.status = self.status_of(visit.status, visit.date);
        visit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    #[test]
    fn a_visit_can_be_completed_through_its_grace_days_and_expires_the_day_after() {
        let deadlines = Deadlines::on(day("2026-12-10"), 2);
        let requested = VisitStatus::Requested;
        assert_eq!(deadlines.status_of(requested, day("2026-12-08")), requested);
        assert_eq!(
            deadlines.status_of(requested, day("2026-12-07")),
            VisitStatus::Expired
        );
        assert_eq!(
            deadlines.status_of(VisitStatus::Accepted, day("2026-12-07")),
            VisitStatus::Expired
        );
    }

    #[test]
    fn finished_visits_keep_their_status_however_old() {
        let deadlines = Deadlines::on(day("2026-12-10"), 0);
        for status in [VisitStatus::Completed, VisitStatus::Cancelled] {
            assert_eq!(deadlines.status_of(status, day("2020-01-01")), status);
        }
        assert_eq!(
            deadlines.status_of(VisitStatus::Requested, day("2026-12-10")),
            VisitStatus::Requested,
            "with no grace, today's visit is still due"
        );
    }
}
