//! PostgreSQL's CPU split by who asked for it: each backend's `/proc` time, grouped by its
//! session's `application_name` (the service names every connection by purpose: the request pool
//! `home-visits`, its background readers `home-visits live feed`, ...) or, for the server's own
//! processes, by `backend_type` (`walwriter`, `autovacuum worker`, ...). The whole server's figure
//! says that the database works harder per call; this says for whom.
use std::{collections::BTreeMap, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::cpu::process_time;

/// Each live backend's name and CPU time so far, by pid.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<u32, (String, Duration)>);

/// CPU spent between two snapshots, by session name.
#[derive(Debug, Clone, Default)]
pub struct BySession(pub BTreeMap<String, Duration>);

pub async fn snapshot(db: &DatabaseConnection) -> Snapshot {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT pid, COALESCE(NULLIF(application_name, ''), backend_type, 'unknown') AS name \
             FROM pg_stat_activity",
        ))
        .await
        .unwrap_or_default();
    let mut backends = BTreeMap::new();
    for row in rows {
        let (Ok(pid), Ok(name)) = (
            row.try_get::<i32>("", "pid"),
            row.try_get::<String>("", "name"),
        ) else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        if let Some(time) = process_time(&pid.to_string()) {
            backends.insert(pid, (name, time.own));
        }
    }
    Snapshot(backends)
}

impl Snapshot {
    /// What each session spent since `earlier`; a backend that started in between counts from
    /// zero, one that ended in between is lost (the pools keep theirs for the whole run).
    pub fn since(&self, earlier: &Snapshot) -> BySession {
        let mut spent = BTreeMap::<String, Duration>::new();
        for (pid, (name, now)) in &self.0 {
            let before = earlier.0.get(pid).map_or(Duration::ZERO, |(_, time)| *time);
            *spent.entry(name.clone()).or_default() += now.saturating_sub(before);
        }
        BySession(spent)
    }
}

impl std::ops::AddAssign for BySession {
    fn add_assign(&mut self, other: BySession) {
        for (name, time) in other.0 {
            *self.0.entry(name).or_default() += time;
        }
    }
}

impl BySession {
    /// One report line: µs per call for each session that spent at least 1 µs per call, the
    /// biggest first, and what the server spent beyond them (backends that came and went, the
    /// postmaster).
    pub fn line(&self, workload: &str, server_total: Duration, calls: u64) -> String {
        let per = |spent: Duration| spent.as_secs_f64() * 1e6 / calls.max(1) as f64;
        let mut parts: Vec<(&String, f64)> = self
            .0
            .iter()
            .map(|(name, time)| (name, per(*time)))
            .filter(|(_, micros)| *micros >= 1.0)
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let attributed: Duration = self.0.values().sum();
        let mut text: Vec<String> = parts
            .iter()
            .map(|(name, micros)| format!("{name} {micros:.0}"))
            .collect();
        text.push(format!(
            "rest {:.0}",
            per(server_total.saturating_sub(attributed))
        ));
        format!("{workload:<19} {}", text.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(backends: &[(u32, &str, u64)]) -> Snapshot {
        Snapshot(
            backends
                .iter()
                .map(|(pid, name, millis)| {
                    (*pid, ((*name).to_owned(), Duration::from_millis(*millis)))
                })
                .collect(),
        )
    }

    #[test]
    fn sessions_are_summed_by_name_and_new_backends_count_from_zero() {
        let before = snapshot(&[
            (1, "home-visits", 100),
            (2, "home-visits", 50),
            (3, "walwriter", 7),
        ]);
        let after = snapshot(&[
            (1, "home-visits", 300),
            (2, "home-visits", 80),
            (3, "walwriter", 9),
            (4, "home-visits live feed", 40),
        ]);
        let spent = after.since(&before);
        assert_eq!(spent.0["home-visits"], Duration::from_millis(230));
        assert_eq!(spent.0["walwriter"], Duration::from_millis(2));
        assert_eq!(spent.0["home-visits live feed"], Duration::from_millis(40));
        // 272 ms attributed of 300 over 1,000 calls: per call 230, 40, 2 µs and 28 µs of rest.
        assert_eq!(
            spent.line("request", Duration::from_millis(300), 1_000),
            "request             home-visits 230, home-visits live feed 40, walwriter 2, rest 28"
        );
    }
}
