//! PostgreSQL access shared by the server and the workers.
//!
//! The schema lives in `migrations/` at the workspace root and is embedded here,
//! so whichever process starts first brings the database up to date.

pub mod artifacts;
pub mod ingest;
pub mod metrics;
pub mod queue;
pub mod runs;
pub mod studies;
pub mod testing;
pub mod worker_metrics;
pub mod workers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Where in its data folder `maelab serve` writes the URL of its embedded
/// PostgreSQL (0600), and where a worker on the same host given no URL reads it.
pub const URL_FILE: &str = "database-url";

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Why the database could not be reached or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "DATABASE_URL is malformed ({0}); expected postgres://user[:password]@host[:port]/database"
    )]
    BadUrl(String),
    #[error(
        "cannot connect to PostgreSQL at {target}: {source}; is the server running and the URL right?"
    )]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Parse a `postgres://` URL, naming what is wrong with it.
pub fn parse_url(url: &str) -> Result<PgConnectOptions, DbError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(DbError::BadUrl("it must start with postgres://".into()));
    }
    url.parse::<PgConnectOptions>()
        .map(|o| o.log_statements(tracing::log::LevelFilter::Trace))
        .map_err(|e| DbError::BadUrl(e.to_string()))
}

/// A pool of `max_connections`, checked with one connection before it is returned.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = parse_url(url)?;
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

/// Bring the schema up to date; a second call changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
