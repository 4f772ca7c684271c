//! The live feed's reader for the whole deployment when there is no broker. One instance leads
//! (see `leader`): it reads the log as it grows and sends what it read as `NOTIFY` payloads on
//! [`CHANNEL`], which every instance's feed listens to (`feed`). So the database serves one
//! reader however many instances and subscribers there are, and the mutations' own transactions
//! carry no `NOTIFY` (one takes a lock at commit that serialises the committers that carry it; here
//! only the leader's own statements do).
//!
//! A notification names the stretch of the log it belongs to (`stretch`), so an instance that
//! missed one (its listener reconnected, the leader changed) sees the gap and reads it from the
//! log itself. An event too large for a notification is announced without its body: instances
//! read that stretch from the log.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::sqlx::{self, PgConnection, postgres::PgConnectOptions};

use super::{
    leader,
    log::{self, LogPosition, StoredEvent},
    stretch::{self, Place},
};
use crate::db::{self, Database};

pub const CHANNEL: &str = "home_visits_log";
/// Any fixed number, other than the relay's; the same in every instance.
const LOCK_KEY: i64 = 0x686f_6d65_6c69_7665;
const LEADERSHIP_RETRY: Duration = Duration::from_secs(1);
/// How soon the leader reads again after finding events; doubled on every read that finds none,
/// up to [`IDLE_POLL`]: a commit waits at most that long to be read.
const BUSY_POLL: Duration = Duration::from_millis(10);
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often an idle leader announces where the log is (an empty stretch): an instance that
/// missed something sees the gap within this, and the leader learns its connection (and so its
/// lock) is still there.
const HEARTBEAT: Duration = Duration::from_secs(1);
const PAGE: u64 = 500;
/// Events read and announced in one go at most; a backlog goes out in rounds of this size.
const MOST: usize = 2_000;
/// PostgreSQL refuses a payload of 8,000 bytes or more.
const PAYLOAD_LIMIT: usize = 7_900;

/// Offers to lead until the task is aborted; leads while it holds the lock.
/// `leading` is raised while this instance leads (for `/readyz`).
pub async fn run(db: Database, options: PgConnectOptions, leading: Arc<AtomicBool>) {
    let name = format!("{} live feed leader", db::APPLICATION_NAME);
    let mut candidate = leader::Candidate::new(&options, LOCK_KEY, &name);
    loop {
        let Some(connection) = candidate.try_to_lead().await else {
            tokio::time::sleep(LEADERSHIP_RETRY).await;
            continue;
        };
        tracing::info!("live feed: leading, announcing the log to every instance");
        leading.store(true, Ordering::Relaxed);
        let reason = lead(&db, connection).await;
        leading.store(false, Ordering::Relaxed);
        tracing::warn!(%reason, "live feed: no longer leading");
        candidate.resign().await;
        tokio::time::sleep(LEADERSHIP_RETRY).await;
    }
}

/// Announces the log while this instance leads; returns why it stopped.
async fn lead(db: &Database, connection: &mut PgConnection) -> String {
    // A notification is only a copy of what the log holds: no reason to wait for its flush.
    if let Err(error) = sqlx::query("SET synchronous_commit = off")
        .execute(&mut *connection)
        .await
    {
        return format!("cannot set up the leader connection: {error}");
    }
    // Instances fill any gap between what they had and this from the log themselves.
    let mut after = match log::end(db).await {
        Ok(end) => end,
        Err(error) => return format!("cannot find the end of the log: {error}"),
    };
    let mut pause = BUSY_POLL;
    // Where the log is, at once: instances behind what the last leader sent catch up now.
    if let Err(error) = announce(connection, &[heartbeat(after)]).await {
        return format!("cannot announce: {error}");
    }
    let mut last_sent = Instant::now();
    loop {
        match stretch::read_on(db, after, PAGE, MOST).await {
            Ok(Some((events, to))) => {
                let messages = announcements(after, to, &events);
                if let Err(error) = announce(connection, &messages).await {
                    return format!("cannot announce: {error}");
                }
                after = to;
                last_sent = Instant::now();
                pause = BUSY_POLL;
                if events.len() < MOST {
                    tokio::time::sleep(pause).await;
                }
            }
            Ok(None) => {
                if last_sent.elapsed() >= HEARTBEAT {
                    let beat = [heartbeat(after)];
                    let sent = announce(connection, &beat);
                    match tokio::time::timeout(Duration::from_secs(5), sent).await {
                        Ok(Ok(())) => last_sent = Instant::now(),
                        Ok(Err(error)) => return format!("leader connection lost: {error}"),
                        Err(_) => return "leader connection did not answer in 5 s".into(),
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(IDLE_POLL);
            }
            Err(error) => {
                tracing::warn!(%error, "live feed: cannot read the log");
                tokio::time::sleep(LEADERSHIP_RETRY).await;
            }
        }
    }
}

async fn announce(connection: &mut PgConnection, messages: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, message) FROM unnest($2::text[]) AS message")
        .bind(CHANNEL)
        .bind(messages)
        .execute(&mut *connection)
        .await
        .map(drop)
}

/// An empty stretch at `at`: where the log is, for instances to check they have everything.
fn heartbeat(at: LogPosition) -> String {
    let place = Place {
        from: at,
        to: at,
        index: 0,
    };
    format!("{place} 0")
}

/// The notifications for the stretch `(from, to]` holding `events` (in the order handed on):
/// `"<from> <to> <first index> <count>"`, then a line with the events from that index on as a JSON
/// array of `[txid, event]`, as many as fit. With no second line, read the stretch from the log.
fn announcements(from: LogPosition, to: LogPosition, events: &[StoredEvent]) -> Vec<String> {
    let total = events.len();
    let header = |first: usize| {
        let place = Place {
            from,
            to,
            index: u32::try_from(first).unwrap_or(u32::MAX),
        };
        format!("{place} {total}")
    };
    let bodies: Option<Vec<String>> = events
        .iter()
        .map(|event| serde_json::to_string(&(event.txid, event)).ok())
        .collect();
    let room = PAYLOAD_LIMIT.saturating_sub(header(total).len() + 3);
    let Some(bodies) = bodies.filter(|bodies| bodies.iter().all(|body| body.len() <= room)) else {
        return vec![header(0)];
    };
    let mut messages = Vec::new();
    let mut first = 0;
    let mut chunk = String::new();
    for (index, body) in bodies.iter().enumerate() {
        if !chunk.is_empty() && chunk.len() + body.len() + 1 > room {
            messages.push(format!("{}\n[{chunk}]", header(first)));
            chunk.clear();
            first = index;
        }
        if !chunk.is_empty() {
            chunk.push(',');
        }
        chunk.push_str(body);
    }
    messages.push(format!("{}\n[{chunk}]", header(first)));
    messages
}

/// One notification, as an instance reads it.
pub struct Announcement<'a> {
    /// The stretch, with `index` the first event this notification carries.
    pub place: Place,
    /// How many events the whole stretch holds.
    pub total: u32,
    /// The events' JSON, when carried.
    body: Option<&'a str>,
}

impl<'a> Announcement<'a> {
    pub fn parse(payload: &'a str) -> Option<Self> {
        let (header, body) = match payload.split_once('\n') {
            Some((header, body)) => (header, Some(body)),
            None => (payload, None),
        };
        let (place, total) = header.rsplit_once(' ')?;
        Some(Self {
            place: Place::parse(place)?,
            total: total.parse().ok()?,
            body,
        })
    }

    /// The events carried; `None` when the stretch must be read from the log (not carried, or
    /// not readable by this version).
    pub fn events(&self) -> Option<Vec<StoredEvent>> {
        let carried: Vec<(u64, StoredEvent)> = serde_json::from_str(self.body?)
            .inspect_err(|error| tracing::warn!(%error, "live feed: unreadable announcement"))
            .ok()?;
        Some(
            carried
                .into_iter()
                .map(|(txid, mut event)| {
                    event.txid = txid;
                    event
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn event(txid: u64, position: i64, payload_bytes: usize) -> StoredEvent {
        StoredEvent {
            id: Uuid::now_v7(),
            event_type: "visit.requested".into(),
            version: 1,
            aggregate_type: "visit".into(),
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 1,
            occurred_at: Utc::now(),
            traceparent: None,
            payload: serde_json::json!({ "filler": "x".repeat(payload_bytes) }),
            position,
            txid,
        }
    }

    fn at(txid: u64, position: i64) -> LogPosition {
        LogPosition { txid, position }
    }

    #[test]
    fn a_stretch_goes_out_in_notifications_that_fit_and_comes_back_whole() {
        let events: Vec<StoredEvent> = (0..40).map(|n| event(900 + n, n as i64, 500)).collect();
        let messages = announcements(at(899, 0), at(939, 39), &events);
        assert!(messages.len() > 1, "forty events of 500 bytes need several");
        let mut read_back = Vec::new();
        for message in &messages {
            assert!(message.len() < 8_000, "{} bytes", message.len());
            let Some(announcement) = Announcement::parse(message) else {
                panic!("unreadable: {message}");
            };
            assert_eq!(announcement.total, 40);
            assert_eq!(announcement.place.index as usize, read_back.len());
            read_back.extend(announcement.events().unwrap_or_default());
        }
        assert_eq!(read_back, events, "every event once, in order, txids kept");
    }

    #[test]
    fn a_heartbeat_is_an_empty_stretch_at_the_end_of_the_log() {
        let beat = heartbeat(at(77, 12));
        let Some(announcement) = Announcement::parse(&beat) else {
            panic!("unreadable: {beat}");
        };
        assert_eq!(
            (announcement.place.from, announcement.place.to),
            (at(77, 12), at(77, 12))
        );
        assert_eq!(announcement.total, 0);
        assert!(announcement.events().is_none());
    }

    #[test]
    fn an_event_too_large_to_carry_is_announced_without_a_body() {
        let events = vec![event(5, 1, 10), event(6, 2, 9_000)];
        let messages = announcements(at(4, 0), at(6, 2), &events);
        assert_eq!(
            messages,
            vec!["4.0 6.2 0 2".to_string()],
            "the stretch, from 0, of 2"
        );
        let Some(announcement) = Announcement::parse(&messages[0]) else {
            panic!("unreadable");
        };
        assert!(announcement.events().is_none());
    }
}
