//! `maelab serve` settings: flags with `MAELAB_…` (and `DATABASE_URL`)
//! environment fallbacks, defaults that start a working local service.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the server is configured.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    /// Address to listen on.
    #[arg(long, env = "MAELAB_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// PostgreSQL URL. Unset: start (or reuse) an embedded cluster in the data folder.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where the embedded PostgreSQL cluster and other local state live.
    #[arg(long, env = "MAELAB_DATA_DIR", default_value = ".maelab")]
    pub data_dir: PathBuf,

    /// Folder of the static files (CSS, vendored chart library).
    #[arg(long, env = "MAELAB_STATIC_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../static"))]
    pub static_dir: PathBuf,

    /// Ask for a token on reads too (by default only writes need one).
    #[arg(long, env = "MAELAB_REQUIRE_AUTH_FOR_READS")]
    pub require_auth_for_reads: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAELAB_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Connections in the server's pool.
    #[arg(long, env = "MAELAB_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,

    /// Most runs one study may queue (arms x seeds x stages).
    #[arg(long, env = "MAELAB_MAX_STUDY_RUNS", default_value_t = maelab_core::study::spec::DEFAULT_MAX_RUNS)]
    pub max_study_runs: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from(".maelab"),
            static_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../static")),
            require_auth_for_reads: false,
            body_limit: 1024 * 1024,
            db_pool: 16,
            max_study_runs: maelab_core::study::spec::DEFAULT_MAX_RUNS,
        }
    }
}
