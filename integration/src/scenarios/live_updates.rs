//! The `live-updates` scenario: a few of the workload's own users watch it through subscriptions
//! (`myVisits` and `openVisits`) on a socket to every instance, while the randomized workload runs
//! across the instances. Afterwards each subscription is held against the outbox, with rules
//! written here again rather than borrowed from the service: every visit event it should have
//! had, none it should not, no event twice, each visit's events in version order, and the visit
//! shown exactly when its subscriber may see it, in the state that event left it.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::{
    bench::stats::Measurement,
    client::Session,
    harness::{Harness, Verdict},
    live::{Frame, LiveClient},
    scenarios::bank::{self, BankOptions},
    scenarios::late_commit,
};

/// Workload users who also watch.
const WATCHERS: usize = 3;
const FIELDS: &str = "eventId type visitId occurredAt visit { id status }";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Feed {
    Mine,
    Open,
}

impl Feed {
    fn id(self) -> &'static str {
        match self {
            Self::Mine => "mine",
            Self::Open => "open",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Mine => "myVisits",
            Self::Open => "openVisits",
        }
    }
}

/// One message a subscription delivered.
#[derive(Debug, Clone)]
struct Delivered {
    feed: Feed,
    event_id: String,
    visit_status: Option<String>,
    latency_ms: Option<f64>,
}

/// What one socket saw, and how it ended if it did.
#[derive(Default)]
struct Seen {
    delivered: Vec<Delivered>,
    problems: Vec<String>,
}

struct Subscriber {
    user: String,
    instance: String,
    seen: Arc<Mutex<Seen>>,
    reader: tokio::task::JoinHandle<()>,
}

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

async fn watch(base_url: &str, session: &Session) -> Result<LiveClient, String> {
    let mut socket = LiveClient::connect(base_url, &session.token)
        .await
        .map_err(|error| format!("socket to {base_url}: {error:#}"))?;
    for feed in [Feed::Mine, Feed::Open] {
        let query = format!("subscription {{ {} {{ {FIELDS} }} }}", feed.field());
        socket
            .subscribe_confirmed(feed.id(), &query, json!({}))
            .await
            .map_err(|error| format!("on {base_url}: {error:#}"))?;
    }
    Ok(socket)
}

fn read_all(mut socket: LiveClient, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let frame = socket.next(Duration::from_secs(3600)).await;
            let Ok(mut seen) = seen.lock() else { return };
            match frame {
                Some(Frame::Message(message)) if message["type"] == "next" => {
                    let feed = match message["id"].as_str() {
                        Some("mine") => Feed::Mine,
                        Some("open") => Feed::Open,
                        _ => {
                            seen.problems
                                .push(format!("message for no subscription: {message}"));
                            continue;
                        }
                    };
                    let event = &message["payload"]["data"][feed.field()];
                    let latency_ms = event["occurredAt"]
                        .as_str()
                        .and_then(|at| at.parse::<DateTime<Utc>>().ok())
                        .map(|at| (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1e3);
                    match event["eventId"].as_str() {
                        Some(event_id) => seen.delivered.push(Delivered {
                            feed,
                            event_id: event_id.to_string(),
                            visit_status: event["visit"]["status"].as_str().map(String::from),
                            latency_ms,
                        }),
                        None => seen.problems.push(format!("unreadable event: {message}")),
                    }
                }
                Some(Frame::Message(message)) => {
                    seen.problems.push(format!("unexpected message: {message}"));
                }
                Some(Frame::Closed { code, reason }) => {
                    seen.problems
                        .push(format!("closed by the server: {code} {reason}"));
                    return;
                }
                None => {
                    seen.problems.push("connection lost".into());
                    return;
                }
            }
        }
    })
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

pub async fn live_updates(harness: &Harness, options: &BankOptions) -> Verdict {
    let users = harness
        .new_users("live", options.users.max(WATCHERS))
        .await?;
    let mut subscribers = Vec::new();
    for session in users.iter().take(WATCHERS) {
        for client in &harness.clients {
            let socket = watch(&client.base_url, session).await?;
            let seen = Arc::new(Mutex::new(Seen::default()));
            subscribers.push(Subscriber {
                user: session.user_id.clone(),
                instance: client.base_url.clone(),
                seen: seen.clone(),
                reader: read_all(socket, seen),
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
        tokio::time::sleep(options.duration.mul_f64(0.4)).await;
        Ok(vec![
            late_commit::hold_a_request(harness, late_commit::hold_in(options.duration)).await?,
        ])
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
        "{} sockets ({} watchers x {} instances), {} visit events, {delivered} deliveries {per_instance:?}, \
         commit->subscriber p50 {:.0} ms p99 {:.0} ms; {workload}",
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
