//! Logs through `tracing` to stderr, filtered by `RUST_LOG` (default: info,
//! with tower-http's request spans).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber; a second call (tests) is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
