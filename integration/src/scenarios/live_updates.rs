//! The `live-updates` scenario: a few of the workload's own users watch it through subscriptions
//! (`myVisits` and `openVisits`) on a socket to every instance, while the randomized workload runs
//! across the instances. Afterwards each subscription is held against the outbox, with rules
//! written here again rather than borrowed from the service: every visit event it should have
//! had, none it should not, no event twice, each visit's events in version order, and the visit
//! shown exactly when its subscriber may see it, in the state that event left it. With instances
//! of its own (`--spawn`) it kills one early in the run (the live feed's reader of the log, when
//! there is no broker): that instance's subscribers reconnect to another with the last cursor of
//! each subscription, and must still have every event once, in order. It is started again before
//! the late commit.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{NaiveDate, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::{
    bench::stats::Measurement,
    harness::{Harness, Verdict},
    scenarios::bank::{self, BankOptions},
    scenarios::late_commit,
    scenarios::live_subscribers::{Delivered, Feed, Seen, Subscriber, read_all, watch},
};
use testkit::instances::SpawnedInstance;

/// Workload users who also watch.
const WATCHERS: usize = 3;
/// A visit event as the outbox has it.
struct Recorded {
    id: String,
    event_type: String,
    visit: String,
    version: i64,
    payload: Value,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.payload[name].as_str()
    }

    fn status_before(&self) -> Option<&str> {
        match self.event_type.as_str() {
            "visit.requested" => None,
            "visit.accepted" => Some("REQUESTED"),
            "visit.released" => Some("ACCEPTED"),
            _ => self.field("previousStatus"),
        }
    }

    fn concerns(&self, user: &str) -> bool {
        [
            self.field("memberId"),
            self.field("palId"),
            self.field("previousPalId"),
        ]
        .contains(&Some(user))
    }

    fn in_open_list(&self, user: &str, status: Option<&str>, today: NaiveDate) -> bool {
        let date = self
            .field("date")
            .and_then(|date| date.parse::<NaiveDate>().ok());
        status == Some("REQUESTED") && self.field("memberId") != Some(user) && date >= Some(today)
    }

    fn should_reach(&self, user: &str, feed: Feed, today: NaiveDate) -> bool {
        match feed {
            Feed::Mine => self.concerns(user),
            Feed::Open => {
                self.in_open_list(user, self.status_before(), today)
                    || self.in_open_list(user, self.field("status"), today)
            }
        }
    }

    fn visible_after(&self, user: &str) -> bool {
        self.field("memberId") == Some(user)
            || self.field("palId") == Some(user)
            || self.field("status") == Some("REQUESTED")
    }
}

/// Kills an instance 15% of the way in (its subscribers reconnect elsewhere with their cursors)
/// and starts it again at 35%, before the late commit (which goes through the first instance).
/// The victim is the deployment's reader of the log when there is one (without a broker), so
/// its leadership moves too; else the last instance.
async fn kill_an_instance(
    harness: &Harness,
    instances: &mut [SpawnedInstance],
    duration: Duration,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    tokio::time::sleep_until((started + duration.mul_f64(0.15)).into()).await;
    let mut leader = None;
    for (index, client) in harness.clients.iter().enumerate() {
        let Some(ready) = client.readiness().await else {
            continue;
        };
        if ready["live"]["feed"]["leading"] == true {
            leader = Some(index);
        }
    }
    let last = instances.len().saturating_sub(1);
    let Some(victim) = instances.get_mut(leader.unwrap_or(last)) else {
        return Ok(Vec::new());
    };
    victim.kill().await.map_err(|error| error.to_string())?;
    let mut log = vec![harness.progress.fault(format!(
        "kill -9 {}{}: its subscribers resume elsewhere from their cursors",
        victim.url(),
        if leader.is_some() {
            ", the live feed's reader"
        } else {
            ""
        }
    ))];
    tokio::time::sleep_until((started + duration.mul_f64(0.35)).into()).await;
    victim.restart().await.map_err(|error| error.to_string())?;
    log.push(
        harness
            .progress
            .fault(format!("restarted {}", victim.url())),
    );
    Ok(log)
}

async fn visit_events_after(harness: &Harness, position: i64) -> Result<Vec<Recorded>, String> {
    let rows = harness
        .db
        .query_all_raw(Statement::from_sql_and_values(
            harness.db.get_database_backend(),
            "SELECT id::text AS id, type, aggregate_id::text AS visit, aggregate_version, payload::text AS payload \
             FROM outbox WHERE aggregate_type = 'visit' AND position > $1 ORDER BY txid, position",
            [position.into()],
        ))
        .await
        .map_err(|error| error.to_string())?;
    rows.iter()
        .map(|row| {
            let payload: String = row.try_get("", "payload").map_err(|e| e.to_string())?;
            Ok(Recorded {
                id: row.try_get("", "id").map_err(|e| e.to_string())?,
                event_type: row.try_get("", "type").map_err(|e| e.to_string())?,
                visit: row.try_get("", "visit").map_err(|e| e.to_string())?,
                version: row
                    .try_get("", "aggregate_version")
                    .map_err(|e| e.to_string())?,
                payload: serde_json::from_str(&payload).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

async fn last_position(harness: &Harness) -> Result<i64, String> {
    let row = harness
        .db
        .query_one_raw(Statement::from_string(
            harness.db.get_database_backend(),
            "SELECT COALESCE(max(position), 0) AS position FROM outbox",
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no row")?;
    row.try_get("", "position")
        .map_err(|error| error.to_string())
}

/// What is wrong with what one socket delivered, against what it should have.
fn judge(subscriber_user: &str, seen: &Seen, events: &[Recorded], today: NaiveDate) -> Vec<String> {
    let by_id: HashMap<&str, &Recorded> = events
        .iter()
        .map(|event| (event.id.as_str(), event))
        .collect();
    let mut problems = seen.problems.clone();
    for feed in [Feed::Mine, Feed::Open] {
        let delivered: Vec<&Delivered> = seen.delivered.iter().filter(|d| d.feed == feed).collect();
        let mut counted: HashMap<&str, usize> = HashMap::new();
        let mut last_version: HashMap<&str, i64> = HashMap::new();
        for message in &delivered {
            *counted.entry(message.event_id.as_str()).or_default() += 1;
            let Some(event) = by_id.get(message.event_id.as_str()) else {
                problems.push(format!(
                    "{}: event {} is no visit event of this run",
                    feed.id(),
                    message.event_id
                ));
                continue;
            };
            if !event.should_reach(subscriber_user, feed, today) {
                problems.push(format!(
                    "{}: got {} {} it should not have",
                    feed.id(),
                    event.event_type,
                    event.id
                ));
            }
            let previous = last_version.insert(event.visit.as_str(), event.version);
            if previous.is_some_and(|previous| previous >= event.version) {
                problems.push(format!(
                    "{}: visit {} version {} after version {}",
                    feed.id(),
                    event.visit,
                    event.version,
                    previous.unwrap_or_default()
                ));
            }
            let shown = message.visit_status.as_deref();
            let expected = event
                .visible_after(subscriber_user)
                .then(|| event.field("status"))
                .flatten();
            if shown != expected {
                problems.push(format!(
                    "{}: {} showed the visit as {shown:?}, expected {expected:?}",
                    feed.id(),
                    event.id
                ));
            }
        }
        let duplicated = counted.values().filter(|count| **count > 1).count();
        if duplicated > 0 {
            problems.push(format!(
                "{}: {duplicated} events delivered more than once",
                feed.id()
            ));
        }
        let missing: Vec<&str> = events
            .iter()
            .filter(|event| event.should_reach(subscriber_user, feed, today))
            .filter(|event| !counted.contains_key(event.id.as_str()))
            .map(|event| event.id.as_str())
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{}: {} events never arrived (first {})",
                feed.id(),
                missing.len(),
                missing[0]
            ));
        }
    }
    problems
}

fn expected_count(user: &str, events: &[Recorded], today: NaiveDate) -> usize {
    [Feed::Mine, Feed::Open]
        .iter()
        .map(|feed| {
            events
                .iter()
                .filter(|event| event.should_reach(user, *feed, today))
                .count()
        })
        .sum()
}

pub async fn live_updates(
    harness: &Harness,
    instances: Option<&mut Vec<SpawnedInstance>>,
    options: &BankOptions,
) -> Verdict {
    let users = harness
        .new_users("live", options.users.max(WATCHERS))
        .await?;
    let mut subscribers = Vec::new();
    let urls: Vec<String> = harness.clients.iter().map(|c| c.base_url.clone()).collect();
    for session in users.iter().take(WATCHERS) {
        for (index, url) in urls.iter().enumerate() {
            let socket = watch(url, &session.token, &HashMap::new()).await?;
            let seen = Arc::new(Mutex::new(Seen::default()));
            // Where its subscribers go if this one is killed.
            let fallback = &urls[(index + 1) % urls.len()];
            subscribers.push(Subscriber {
                user: session.user_id.clone(),
                instance: url.clone(),
                seen: seen.clone(),
                reader: read_all(socket, session.token.clone(), fallback.clone(), seen),
            });
        }
    }
    let start = last_position(harness).await?;
    // A late commit is the fault a live feed most easily gets wrong: events recorded after it
    // are readable before it is.
    let faults = async {
        if !options.faults {
            return Ok(Vec::new());
        }
        let kill = async {
            match instances {
                Some(instances) => kill_an_instance(harness, instances, options.duration).await,
                None => Ok(Vec::new()),
            }
        };
        let late = async {
            tokio::time::sleep(options.duration.mul_f64(0.4)).await;
            late_commit::hold_a_request(harness, late_commit::hold_in(options.duration)).await
        };
        let (killed, late) = tokio::join!(kill, late);
        let mut log = killed?;
        log.push(late?);
        Ok(log)
    };
    let workload = bank::run_workload(harness, options, &users, faults).await?;

    // Deliveries trail commits a little (the relay, the feed): wait until every socket has what it
    // should, or nothing more arrives for a while.
    let today = Utc::now().date_naive();
    let events = visit_events_after(harness, start).await?;
    let mut last_progress = (0_usize, Instant::now());
    loop {
        let delivered: usize = subscribers
            .iter()
            .map(|s| s.seen.lock().map(|seen| seen.delivered.len()).unwrap_or(0))
            .sum();
        let expected: usize = subscribers
            .iter()
            .map(|s| expected_count(&s.user, &events, today))
            .sum();
        if delivered >= expected {
            // Anything extra still on its way would show up now.
            tokio::time::sleep(Duration::from_millis(500)).await;
            break;
        }
        if delivered != last_progress.0 {
            last_progress = (delivered, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut problems = Vec::new();
    let mut latencies = Measurement::default();
    let mut delivered = 0;
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    let mut users_seen = HashSet::new();
    let mut reconnects = 0;
    for subscriber in &subscribers {
        subscriber.reader.abort();
        let Ok(seen) = subscriber.seen.lock() else {
            return Err("a reader panicked".into());
        };
        for message in &seen.delivered {
            if let Some(ms) = message.latency_ms {
                latencies.record(Duration::from_secs_f64(ms.max(0.0) / 1e3));
            }
        }
        delivered += seen.delivered.len();
        reconnects += seen.reconnects.len();
        *per_instance.entry(subscriber.instance.clone()).or_default() += seen.delivered.len();
        users_seen.insert(subscriber.user.clone());
        for problem in judge(&subscriber.user, &seen, &events, today) {
            problems.push(format!(
                "{} on {}: {problem}",
                &subscriber.user[..8],
                subscriber.instance
            ));
        }
    }
    let detail = format!(
        "{} subscribers ({} watchers x {} instances, {reconnects} reconnects with cursors), {} visit events, \
         {delivered} deliveries {per_instance:?}, commit->subscriber p50 {:.0} ms p99 {:.0} ms; {workload}",
        subscribers.len(),
        users_seen.len(),
        harness.clients.len(),
        events.len(),
        latencies.percentile(0.5).as_secs_f64() * 1e3,
        latencies.percentile(0.99).as_secs_f64() * 1e3,
    );
    if delivered == 0 {
        return Err(format!("no subscriber saw anything: {detail}"));
    }
    if problems.is_empty() {
        Ok(detail)
    } else {
        let shown: Vec<&String> = problems.iter().take(5).collect();
        Err(format!(
            "{} problems, first {shown:?}; {detail}",
            problems.len()
        ))
    }
}
