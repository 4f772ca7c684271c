//! The `live-updates` scenario's subscribers: a socket per watcher and instance with both
//! subscriptions, which reconnects with its last cursors when the socket ends, as a client would.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::live::{Frame, LiveClient};

const FIELDS: &str = "cursor eventId type visitId occurredAt visit { id status }";
/// A subscriber whose socket ends reconnects at most this often in one run.
const RECONNECTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Feed {
    Mine,
    Open,
}

impl Feed {
    pub(super) fn id(self) -> &'static str {
        match self {
            Self::Mine => "mine",
            Self::Open => "open",
        }
    }

    pub(super) fn field(self) -> &'static str {
        match self {
            Self::Mine => "myVisits",
            Self::Open => "openVisits",
        }
    }
}

/// One message a subscription delivered.
#[derive(Debug, Clone)]
pub(super) struct Delivered {
    pub(super) feed: Feed,
    pub(super) event_id: String,
    pub(super) visit_status: Option<String>,
    pub(super) latency_ms: Option<f64>,
}

/// What one subscriber saw (over every socket it had), and how it ended if it did.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) delivered: Vec<Delivered>,
    pub(super) problems: Vec<String>,
    /// The last cursor of each subscription, to resume from.
    pub(super) cursors: HashMap<Feed, String>,
    /// Where it reconnected, in order.
    pub(super) reconnects: Vec<String>,
}

pub(super) struct Subscriber {
    pub(super) user: String,
    pub(super) instance: String,
    pub(super) seen: Arc<Mutex<Seen>>,
    pub(super) reader: tokio::task::JoinHandle<()>,
}

/// A socket to `base_url` with both subscriptions, each resuming after its cursor if it has one
/// (then its replay may arrive before the confirmation, so none is waited for).
pub(super) async fn watch(
    base_url: &str,
    token: &str,
    cursors: &HashMap<Feed, String>,
) -> Result<LiveClient, String> {
    let mut socket = LiveClient::connect(base_url, token)
        .await
        .map_err(|error| format!("socket to {base_url}: {error:#}"))?;
    for feed in [Feed::Mine, Feed::Open] {
        let query = format!(
            "subscription($after: String) {{ {}(after: $after) {{ {FIELDS} }} }}",
            feed.field()
        );
        let variables = json!({ "after": cursors.get(&feed) });
        let subscribed = if cursors.is_empty() {
            socket
                .subscribe_confirmed(feed.id(), &query, variables)
                .await
        } else {
            socket.subscribe(feed.id(), &query, variables).await
        };
        subscribed.map_err(|error| format!("on {base_url}: {error:#}"))?;
    }
    Ok(socket)
}

/// Reads what the socket delivers; when it ends, reconnects (to `fallback`, the next instance)
/// with the last cursors, as a client would.
pub(super) fn read_all(
    mut socket: LiveClient,
    token: String,
    fallback: String,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let frame = socket.next(Duration::from_secs(3600)).await;
            let ended = match &frame {
                Some(Frame::Closed { code, reason }) => Some(format!("closed {code} {reason}")),
                None => Some("connection lost".to_string()),
                Some(Frame::Message(_)) => None,
            };
            if let Some(ended) = ended {
                let cursors = match seen.lock() {
                    Ok(mut seen) if seen.reconnects.len() < RECONNECTS => {
                        seen.reconnects.push(format!("{ended}; to {fallback}"));
                        seen.cursors.clone()
                    }
                    Ok(mut seen) => {
                        seen.problems.push(format!("{ended}, too often"));
                        return;
                    }
                    Err(_) => return,
                };
                match reconnect(&fallback, &token, &cursors).await {
                    Ok(resumed) => {
                        socket = resumed;
                        continue;
                    }
                    Err(error) => {
                        if let Ok(mut seen) = seen.lock() {
                            seen.problems.push(format!("{ended}; {error}"));
                        }
                        return;
                    }
                }
            }
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
                    if let Some(cursor) = event["cursor"].as_str() {
                        seen.cursors.insert(feed, cursor.to_string());
                    }
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
                Some(Frame::Message(message)) if message["type"] == "pong" => {}
                Some(Frame::Message(message)) => {
                    seen.problems.push(format!("unexpected message: {message}"));
                }
                Some(Frame::Closed { .. }) | None => {}
            }
        }
    })
}

/// A new socket to `base_url` resuming both subscriptions, tried for a few seconds (the instance
/// may be the one just restarted).
async fn reconnect(
    base_url: &str,
    token: &str,
    cursors: &HashMap<Feed, String>,
) -> Result<LiveClient, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match watch(base_url, token, cursors).await {
            Ok(socket) => return Ok(socket),
            Err(error) if Instant::now() >= deadline => {
                return Err(format!("cannot reconnect: {error}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
