//! What the event machinery does under the load, watched through `/readyz`: the relay (with
//! `--relay`: how fast it publishes, how far behind it falls) and the notifications consumer (how
//! far behind the log it falls), and how long each takes to catch up once the load stops.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::client::Client;

#[derive(Debug, Clone, Copy, Default)]
pub struct Lagging {
    pub max_events: u64,
    pub max_seconds: f64,
    /// From the end of the load until it was caught up.
    pub caught_up_after: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct EventFigures {
    pub relay: Option<Lagging>,
    pub published_per_second: f64,
    /// `None` when no instance runs the consumer (`--consumers none`).
    pub consumer: Option<Lagging>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    published: u64,
    relay: Option<(u64, f64)>,
    consumer: Option<(u64, f64)>,
}

fn lag_of(value: &Value) -> Option<(u64, f64)> {
    Some((
        value["events"].as_u64()?,
        value["seconds"].as_f64().unwrap_or(0.0),
    ))
}

async fn sample(clients: &[Client]) -> Sample {
    let mut sample = Sample::default();
    for client in clients {
        let Some(ready) = client.readiness().await else {
            continue;
        };
        sample.published += ready["relay"]["published"].as_u64().unwrap_or(0);
        sample.relay = sample.relay.or(lag_of(&ready["relay"]["lag"]));
        // The log-fed consumer's lag is the same seen from any instance; a JetStream one's is the
        // instance's own view of the shared consumer, so keep the worst.
        let notifications = ready["consumers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|consumer| consumer["name"] == "notifications");
        if let Some((events, seconds)) = notifications.and_then(|consumer| lag_of(&consumer["lag"]))
        {
            let worst = sample.consumer.unwrap_or((0, 0.0));
            sample.consumer = Some((worst.0.max(events), worst.1.max(seconds)));
        }
    }
    sample
}

fn note(lagging: &mut Lagging, lag: Option<(u64, f64)>) {
    if let Some((events, seconds)) = lag {
        lagging.max_events = lagging.max_events.max(events);
        lagging.max_seconds = lagging.max_seconds.max(seconds);
    }
}

/// Runs `load` while sampling every 200 ms, then waits (up to a minute) for both to catch up.
/// `consumer`: whether the instances run the notifications consumer (they may leave it to others).
pub async fn watch<F: Future<Output = T>, T>(
    clients: &[Client],
    relay: bool,
    consumer: bool,
    load: F,
) -> (T, EventFigures) {
    let published_before = sample(clients).await.published;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = async {
        let mut figures = EventFigures {
            relay: relay.then(Lagging::default),
            consumer: consumer.then(Lagging::default),
            ..EventFigures::default()
        };
        while !done.load(Ordering::Acquire) {
            let now = sample(clients).await;
            if let Some(relay) = figures.relay.as_mut() {
                note(relay, now.relay);
            }
            if let Some(consumer) = figures.consumer.as_mut() {
                note(consumer, now.consumer);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        figures
    };
    let load = async {
        let outcome = load.await;
        done.store(true, Ordering::Release);
        outcome
    };
    let (outcome, mut figures) = tokio::join!(load, sampler);
    let loaded_for = started.elapsed();
    let load_ended = Instant::now();
    let (mut relay_done, mut consumer_done) = (!relay, figures.consumer.is_none());
    loop {
        let now = sample(clients).await;
        let waited = load_ended.elapsed();
        if !relay_done && matches!(now.relay, Some((0, _))) {
            relay_done = true;
            if let Some(relay) = figures.relay.as_mut() {
                relay.caught_up_after = waited;
            }
            figures.published_per_second = now.published.saturating_sub(published_before) as f64
                / (loaded_for + waited).as_secs_f64().max(f64::EPSILON);
        }
        if !consumer_done && matches!(now.consumer, Some((0, _)) | None) {
            consumer_done = true;
            if let Some(consumer) = figures.consumer.as_mut() {
                consumer.caught_up_after = waited;
            }
        }
        if (relay_done && consumer_done) || waited > Duration::from_secs(60) {
            return (outcome, figures);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures as report lines.
pub fn lines(workload: &str, figures: &EventFigures) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(relay) = &figures.relay {
        lines.push(format!(
            "{workload:<13} relay         {:>7.0} events/s   max lag {:>6} events / {:>5.2} s   caught up {:>5.2} s after the load",
            figures.published_per_second,
            relay.max_events,
            relay.max_seconds,
            relay.caught_up_after.as_secs_f64()
        ));
    }
    lines.push(match &figures.consumer {
        Some(consumer) => format!(
            "{workload:<13} notifications                    max lag {:>6} events / {:>5.2} s   caught up {:>5.2} s after the load",
            consumer.max_events,
            consumer.max_seconds,
            consumer.caught_up_after.as_secs_f64()
        ),
        None => format!("{workload:<13} notifications                    not run by these instances"),
    });
    lines
}
