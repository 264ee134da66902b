//! Logging: `tracing` to standard error, as text for people or JSON lines for log pipelines
//! (`LOG_FORMAT=json`), filtered by `RUST_LOG`. Each request runs in a span carrying its request
//! id, method and route template, so every line it logs can be found by that id.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` picks JSON lines.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}
