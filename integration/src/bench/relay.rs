//! With `--relay`, the instances publish the event log to a nats-server of the bench's own while
//! the load runs; this watches the relay through `/readyz`: how fast it publishes, how far behind
//! it falls, how long it takes to catch up once the load stops.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::client::Client;

#[derive(Debug, Clone, Copy, Default)]
pub struct RelayFigures {
    pub published_per_second: f64,
    pub max_lag_events: u64,
    pub max_lag_seconds: f64,
    /// From the end of the load until the relay had published everything.
    pub drained_after: Duration,
}

/// Events published so far by all instances, and the lag the leader's checkpoint shows.
async fn sample(clients: &[Client]) -> (u64, Option<(u64, f64)>) {
    let mut published = 0;
    let mut lag = None;
    for client in clients {
        let Some(ready) = client.readiness().await else {
            continue;
        };
        let relay = &ready["relay"];
        published += relay["published"].as_u64().unwrap_or(0);
        if let (Some(events), Some(seconds)) = (
            relay["lag"]["events"].as_u64(),
            relay["lag"]["seconds"].as_f64(),
        ) {
            lag = Some((events, seconds));
        }
    }
    (published, lag)
}

/// Runs `load` while sampling the relay every 200 ms, then waits (up to a minute) for it to drain.
pub async fn watch<F: Future<Output = T>, T>(clients: &[Client], load: F) -> (T, RelayFigures) {
    let (published_before, _) = sample(clients).await;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = async {
        let mut figures = RelayFigures::default();
        while !done.load(Ordering::Acquire) {
            if let (_, Some((events, seconds))) = sample(clients).await {
                figures.max_lag_events = figures.max_lag_events.max(events);
                figures.max_lag_seconds = figures.max_lag_seconds.max(seconds);
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
    loop {
        let (published, lag) = sample(clients).await;
        let drained = matches!(lag, Some((0, _)));
        if drained || load_ended.elapsed() > Duration::from_secs(60) {
            figures.drained_after = load_ended.elapsed();
            figures.published_per_second = published.saturating_sub(published_before) as f64
                / (loaded_for + figures.drained_after)
                    .as_secs_f64()
                    .max(f64::EPSILON);
            return (outcome, figures);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures as one report line.
pub fn line(workload: &str, figures: &RelayFigures) -> String {
    format!(
        "{workload:<13} relay {:>7.0} events/s   max lag {:>6} events / {:>5.2} s   caught up {:>5.2} s after the load",
        figures.published_per_second,
        figures.max_lag_events,
        figures.max_lag_seconds,
        figures.drained_after.as_secs_f64()
    )
}
