//! What a run measured: latencies in an HDR histogram (constant memory however long the run, exact
//! to 3 significant digits), errors by code, and the per-round summaries the report takes medians of.
use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes.
const LONGEST_MICROS: u64 = 600_000_000;

pub struct Measurement {
    latencies: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Default for Measurement {
    fn default() -> Self {
        Self {
            latencies: Histogram::new_with_bounds(1, LONGEST_MICROS, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }
}

impl Measurement {
    /// A successful call's latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies
            .saturating_record(micros.clamp(1, LONGEST_MICROS));
    }

    pub fn record_error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Measurement) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
    }

    pub fn successes(&self) -> u64 {
        self.latencies.len()
    }

    pub fn per_second(&self) -> f64 {
        self.successes() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.latencies.value_at_quantile(fraction))
    }
}

/// One round's figures, for the service or for pgbench.
#[derive(Clone, Copy)]
pub struct Summary {
    pub per_second: f64,
    /// Calls answered, successful or not (transactions, for pgbench).
    pub count: u64,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Summary {
    pub fn of(measured: &Measurement) -> Self {
        Self {
            per_second: measured.per_second(),
            count: measured.successes() + measured.errors.values().sum::<u64>(),
            p50: measured.percentile(0.50),
            p95: measured.percentile(0.95),
            p99: measured.percentile(0.99),
        }
    }

    /// Each figure's median over the rounds (the upper one of an even count).
    pub fn median(rounds: &[Summary]) -> Self {
        fn middle<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            values[values.len() / 2]
        }
        Self {
            per_second: middle(rounds.iter().map(|round| round.per_second).collect()),
            count: middle(rounds.iter().map(|round| round.count).collect()),
            p50: middle(rounds.iter().map(|round| round.p50).collect()),
            p95: middle(rounds.iter().map(|round| round.p95).collect()),
            p99: middle(rounds.iter().map(|round| round.p99).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut measured = Measurement::default();
        for millis in 1..=100 {
            measured.record(Duration::from_millis(millis));
        }
        let p50 = measured.percentile(0.50).as_secs_f64() * 1000.0;
        let p99 = measured.percentile(0.99).as_secs_f64() * 1000.0;
        assert!((49.9..=50.1).contains(&p50), "p50 {p50}");
        assert!((98.9..=99.1).contains(&p99), "p99 {p99}");
        measured.record_error("CONFLICT".into());
        assert_eq!(Summary::of(&measured).count, 101);
    }
}
