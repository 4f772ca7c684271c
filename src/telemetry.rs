use std::fmt::Debug;

use tracing::{
    Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::Targets, fmt, layer::Context, prelude::*,
};

/// Where sqlx reports how long each connection took to get from a pool (with the pool's
/// `acquire_time_level` at [`POOL_ACQUIRE_LEVEL`]: see `db`). Read for a metric, never printed.
const POOL_ACQUIRE_TARGET: &str = "sqlx::pool::acquire";
/// Info, not trace: the most verbose level any layer wants is also the `log` crate's global
/// maximum, and at trace every dependency's `log::trace!` would pay for a filter check.
pub const POOL_ACQUIRE_LEVEL: Level = Level::INFO;

/// Logs to stderr; `RUST_LOG` overrides the default filter. `LOG_FORMAT=json` writes one JSON
/// object per line, each with the fields of the request it belongs to (request id, operation,
/// user id, trace id), for a log pipeline to index; the default is text for people.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,tower_http=info"))
        // One line per acquire is for the metric, whatever RUST_LOG asks of sqlx.
        .add_directive(
            format!("{POOL_ACQUIRE_TARGET}=off")
                .parse()
                .expect("a constant directive"),
        );
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") | Err(_) => false,
        Ok(other) => {
            eprintln!("LOG_FORMAT `{other}` is neither `text` nor `json`; logging text");
            false
        }
    };
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        logs.boxed()
    };
    // Each layer has its own filter, so the acquire events reach the metric whatever RUST_LOG says.
    let acquire_times = PoolAcquireTimes
        .with_filter(Targets::new().with_target(POOL_ACQUIRE_TARGET, POOL_ACQUIRE_LEVEL));
    // A second initialisation (tests) is harmless, so its error is ignored on purpose.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(acquire_times)
        .try_init();
}

/// Feeds sqlx's acquire events into `database_pool_acquire_seconds`: sqlx exposes a pool's size
/// and idle count but not how many wait, and this is the wait itself.
struct PoolAcquireTimes;

impl<S: Subscriber> Layer<S> for PoolAcquireTimes {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut acquired_after = AcquiredAfter(None);
        event.record(&mut acquired_after);
        if let Some(seconds) = acquired_after.0 {
            crate::metrics::pool_acquire_seconds().observe(seconds);
        }
    }
}

struct AcquiredAfter(Option<f64>);

impl Visit for AcquiredAfter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "acquired_after_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn Debug) {}
}
