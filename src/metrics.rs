//! What an operator graphs and alerts on, served as `GET /metrics` in the Prometheus (OpenMetrics)
//! text format.
//!
//! `prometheus-client`, the Prometheus project's own Rust client: typed label sets and no global
//! recorder to install (the `metrics` facade's recorder can be set once per process, which a test
//! binary that starts many instances trips over). Each instance owns its [`Metrics`] (the
//! application state holds it), so two instances in one process count apart. Counters are
//! recorded where the events happen; what the instance's state already knows (pool, relay,
//! consumers, sockets) is set at scrape time by the API's `/metrics` handler. This module depends
//! on nothing of the service's.
//!
//! One exception: the pool-wait histogram is the process's, since sqlx reports each acquire
//! through `tracing` without naming its pool (see `telemetry`). Every instance's registry shows
//! that one histogram; a production process runs one instance, so it is that instance's.
use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Where a read ran: `replica` or `primary`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabels {
    pub served_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
}

pub struct Metrics {
    registry: Registry,
    operations: Family<OperationLabels, Counter>,
    operation_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    http_responses: Family<HttpLabels, Counter>,
    login_throttled: Counter,
    contention: Family<KindLabels, Counter>,
    transaction_retries: Family<ReasonLabels, Counter>,
    pool: Family<StateLabels, Gauge>,
    reads: Family<ServedLabels, Counter>,
    replica_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pool_acquire_seconds: Histogram,
    relay: Family<StateLabels, Gauge>,
    relay_published: Gauge,
    consumer_lag_events: Family<ConsumerLabels, Gauge>,
    consumer_lag_seconds: Family<ConsumerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    consumer_handled: Family<ConsumerLabels, Gauge>,
    websockets: Gauge,
    subscriptions: Gauge,
    /// Operation names seen so far; past [`OPERATION_NAMES`] they are counted as `other`.
    operation_names: Mutex<HashSet<String>>,
}

/// Operation names are the client's choice: a bounded set keeps a scrape bounded. Only operations
/// that ran name their series (see `operation`), so a burst of junk cannot take the slots.
const OPERATION_NAMES: usize = 100;

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's pool-wait histogram (see the module's doc).
pub fn pool_acquire_seconds() -> &'static Histogram {
    static POOL_ACQUIRE_SECONDS: OnceLock<Histogram> = OnceLock::new();
    // 10 µs to ~40 s.
    POOL_ACQUIRE_SECONDS.get_or_init(|| Histogram::new(exponential_buckets(0.000_01, 4.0, 12)))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("home_visits");
        let metrics = Self {
            operations: Family::default(),
            operation_seconds: Family::new_with_constructor(latency_histogram),
            http_responses: Family::default(),
            login_throttled: Counter::default(),
            contention: Family::default(),
            transaction_retries: Family::default(),
            pool: Family::default(),
            reads: Family::default(),
            replica_lag_seconds: Gauge::default(),
            pool_acquire_seconds: pool_acquire_seconds().clone(),
            relay: Family::default(),
            relay_published: Gauge::default(),
            consumer_lag_events: Family::default(),
            consumer_lag_seconds: Family::default(),
            consumer_handled: Family::default(),
            websockets: Gauge::default(),
            subscriptions: Gauge::default(),
            operation_names: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        registry.register(
            "graphql_operations",
            "GraphQL operations by operation name and outcome (ok, or the first error code)",
            metrics.operations.clone(),
        );
        registry.register(
            "graphql_operation_duration_seconds",
            "Time to answer a GraphQL operation",
            metrics.operation_seconds.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by route and status",
            metrics.http_responses.clone(),
        );
        registry.register(
            "login_throttled",
            "Password checks refused by the throttle (RATE_LIMITED)",
            metrics.login_throttled.clone(),
        );
        registry.register(
            "database_contention",
            "Attempts of a request's transaction stopped for contention: lock timeout, deadlock, serialization failure (a lost race for a unique key included) or statement timeout; each was retried or answered as a retryable CONFLICT",
            metrics.contention.clone(),
        );
        registry.register(
            "database_transaction_retries",
            "Transactions the service ran again by itself, by reason: deadlock or serialization_failure (rolled back by PostgreSQL), connection_lost (a pooled connection found dead at BEGIN)",
            metrics.transaction_retries.clone(),
        );
        registry.register(
            "database_pool_connections",
            "Database pool connections: in_use, idle, max",
            metrics.pool.clone(),
        );
        registry.register(
            "database_reads",
            "Lag-tolerant reads by where they ran (replica, primary); counted only with DATABASE_READ_URL set",
            metrics.reads.clone(),
        );
        registry.register(
            "database_replica_lag_seconds",
            "How long ago the primary stood where the replica has replayed to, as last measured",
            metrics.replica_lag_seconds.clone(),
        );
        registry.register(
            "database_pool_acquire_seconds",
            "Time to get a connection from the instance's pools, mostly the wait for a free one (past DATABASE_ACQUIRE_TIMEOUT_MS it is a retryable error); the rate of its sum is the average number of tasks waiting",
            metrics.pool_acquire_seconds.clone(),
        );
        registry.register(
            "relay",
            "The event relay: leader (1 when this instance publishes), broker_connected, lag_events",
            metrics.relay.clone(),
        );
        registry.register(
            "relay_published_events",
            "Events this instance's relay has published since it started",
            metrics.relay_published.clone(),
        );
        registry.register(
            "consumer_lag_events",
            "Events recorded after a consumer's checkpoint",
            metrics.consumer_lag_events.clone(),
        );
        registry.register(
            "consumer_lag_seconds",
            "Age of the oldest event a consumer has not handled",
            metrics.consumer_lag_seconds.clone(),
        );
        registry.register(
            "consumer_handled_events",
            "Events a consumer on this instance has handled since it started",
            metrics.consumer_handled.clone(),
        );
        registry.register(
            "websockets_open",
            "Open GraphQL WebSockets",
            metrics.websockets.clone(),
        );
        registry.register(
            "subscriptions_active",
            "Running GraphQL subscriptions",
            metrics.subscriptions.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// One GraphQL operation answered; `ran` is false for a document refused before it ran (it
    /// did not parse or validate), which is counted under `rejected` whatever it called itself.
    pub fn operation(&self, name: Option<&str>, ran: bool, outcome: &str, took: Duration) {
        let labels = OperationLabels {
            operation: if ran {
                self.operation_label(name)
            } else {
                "rejected".into()
            },
            outcome: outcome.to_string(),
        };
        self.operations.get_or_create(&labels).inc();
        self.operation_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if outcome == "RATE_LIMITED" {
            self.login_throttled.inc();
        }
    }

    /// A document refused before it ran for what it is rather than what it asks (not a trusted
    /// document, a required variable missing): a rejected operation, by code.
    pub fn rejected(&self, code: &str) {
        self.operation(None, false, code, Duration::ZERO);
    }

    fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name else {
            return "anonymous".into();
        };
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return "other".into();
        }
        let mut seen = self
            .operation_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(name) || seen.len() < OPERATION_NAMES {
            seen.insert(name.to_string());
            name.to_string()
        } else {
            "other".into()
        }
    }

    pub fn http_response(&self, route: &str, status: u16) {
        self.http_responses
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// A transaction PostgreSQL stopped for contention (`lock_timeout`, `deadlock`, ...).
    pub fn contention(&self, kind: &'static str) {
        self.contention.get_or_create(&KindLabels { kind }).inc();
    }

    /// A transaction run again by the service itself (`db::retrying`, `db::begin`), and why.
    pub fn transaction_retry(&self, reason: &'static str) {
        self.transaction_retries
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The pool as it is now.
    pub fn set_pool(&self, in_use: i64, idle: i64, max: i64) {
        for (state, value) in [("in_use", in_use), ("idle", idle), ("max", max)] {
            self.pool.get_or_create(&StateLabels { state }).set(value);
        }
    }

    /// The counter lag-tolerant reads are counted in, by where they ran.
    pub fn reads(&self) -> Family<ServedLabels, Counter> {
        self.reads.clone()
    }

    pub fn set_replica_lag(&self, lag: Option<Duration>) {
        self.replica_lag_seconds
            .set(lag.map_or(f64::NAN, |lag| lag.as_secs_f64()));
    }

    pub fn set_live(&self, websockets: usize, subscriptions: usize) {
        self.websockets.set(saturating(websockets as u64));
        self.subscriptions.set(saturating(subscriptions as u64));
    }

    /// The relay as this instance sees it; `lag_events` when it could be measured.
    pub fn set_relay(
        &self,
        leader: bool,
        broker_connected: bool,
        published: u64,
        lag_events: Option<u64>,
    ) {
        let mut states = vec![
            ("leader", i64::from(leader)),
            ("broker_connected", i64::from(broker_connected)),
        ];
        if let Some(lag) = lag_events {
            states.push(("lag_events", saturating(lag)));
        }
        for (state, value) in states {
            self.relay.get_or_create(&StateLabels { state }).set(value);
        }
        self.relay_published.set(saturating(published));
    }

    pub fn set_consumer(
        &self,
        consumer: &'static str,
        lag_events: u64,
        lag_seconds: f64,
        handled: u64,
    ) {
        let labels = ConsumerLabels { consumer };
        self.consumer_lag_events
            .get_or_create(&labels)
            .set(saturating(lag_events));
        self.consumer_lag_seconds
            .get_or_create(&labels)
            .set(lag_seconds);
        self.consumer_handled
            .get_or_create(&labels)
            .set(saturating(handled));
    }

    /// The OpenMetrics text of everything recorded and set.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "metrics did not encode");
        }
        text
    }
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded() {
        let metrics = Metrics::new();
        assert_eq!(metrics.operation_label(None), "anonymous");
        assert_eq!(metrics.operation_label(Some("Me")), "Me");
        assert_eq!(metrics.operation_label(Some("has space")), "other");
        assert_eq!(metrics.operation_label(Some(&"x".repeat(65))), "other");
        for index in 0..OPERATION_NAMES {
            metrics.operation_label(Some(&format!("Op{index}")));
        }
        assert_eq!(metrics.operation_label(Some("OneTooMany")), "other");
        assert_eq!(
            metrics.operation_label(Some("Me")),
            "Me",
            "a name seen early stays"
        );
    }
}
