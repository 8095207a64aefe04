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

    /// Serve the static files (CSS, scripts, vendored chart library) from
    /// this folder instead of the copies compiled into the binary: for
    /// editing them without a rebuild.
    #[arg(long, env = "MAELAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

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

    /// Where artifact bytes live: a local folder (`/path` or `file:///path`) or
    /// `s3://bucket/prefix` (credentials, endpoint and region from the usual
    /// AWS_* variables, e.g. AWS_ENDPOINT_URL for MinIO-likes). Unset:
    /// `<data-dir>/artifacts`. Published to workers through the database.
    #[arg(long, env = "MAELAB_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
}

impl ServeSettings {
    /// The artifact store's URL: `--artifact-store`, else the absolute
    /// `<data-dir>/artifacts`.
    pub fn artifact_store_url(&self) -> std::io::Result<String> {
        match &self.artifact_store {
            Some(url) => Ok(url.clone()),
            None => Ok(std::path::absolute(self.data_dir.join("artifacts"))?
                .display()
                .to_string()),
        }
    }

    /// The one line `maelab serve` logs at start when whoever reaches the
    /// port can read every run: a `--bind` other than loopback with reads open.
    /// None when only this host can connect or reads need a token.
    pub fn exposure_warning(&self) -> Option<String> {
        if self.bind.ip().to_canonical().is_loopback() || self.require_auth_for_reads {
            return None;
        }
        Some(format!(
            "listening on {} with reads open: anyone who can reach this address can read every \
             run, metric and artifact without a token; close reads with --require-auth-for-reads \
             (MAELAB_REQUIRE_AUTH_FOR_READS=true), or bind 127.0.0.1 behind a reverse proxy \
             (README: Behind a reverse proxy)",
            self.bind
        ))
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from(".maelab"),
            static_dir: None,
            require_auth_for_reads: false,
            body_limit: 1024 * 1024,
            db_pool: 16,
            max_study_runs: maelab_core::study::spec::DEFAULT_MAX_RUNS,
            artifact_store: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bind: &str, closed: bool) -> ServeSettings {
        ServeSettings {
            bind: bind.parse().expect("address"),
            require_auth_for_reads: closed,
            ..ServeSettings::default()
        }
    }

    #[test]
    fn only_an_exposed_server_with_open_reads_warns() {
        for exposed in [
            "0.0.0.0:8080",
            "192.168.1.20:80",
            "[::]:8080",
            "[2001:db8::1]:443",
        ] {
            let line = at(exposed, false).exposure_warning();
            let line = line.unwrap_or_else(|| panic!("{exposed} should warn"));
            assert!(line.contains("--require-auth-for-reads"), "{line}");
            assert!(line.contains(exposed), "{line}");
            assert_eq!(
                at(exposed, true).exposure_warning(),
                None,
                "{exposed}, closed"
            );
        }
        for local in [
            "127.0.0.1:8080",
            "127.0.0.2:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(at(local, false).exposure_warning(), None, "{local}");
        }
    }
}
