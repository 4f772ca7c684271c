use tracing_subscriber::{EnvFilter, fmt};

/// Logs to stderr; `RUST_LOG` overrides the default filter. `LOG_FORMAT=json` writes one JSON
/// object per line, each with the fields of the request it belongs to (request id, operation,
/// user id, trace id), for a log pipeline to index; the default is text for people.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,tower_http=info"));
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") | Err(_) => false,
        Ok(other) => {
            eprintln!("LOG_FORMAT `{other}` is neither `text` nor `json`; logging text");
            false
        }
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless, so its error is ignored on purpose.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
