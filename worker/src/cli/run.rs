//! `maelab-worker run`: the queue worker, one process per GPU, until stopped.
//! SIGTERM or Ctrl-C stops the current job at its next step, requeues it,
//! marks the worker stopped and exits 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::queue::{Settings, Shutdown, Worker};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// PostgreSQL URL (falls back to DATABASE_URL, then to the URL a server
    /// with the embedded PostgreSQL wrote to <data-dir>/database-url).
    #[arg(long, env = "MAELAB_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The data folder of a `maelab serve` on this host (its `--data-dir`).
    #[arg(long, env = "MAELAB_DATA_DIR", default_value = ".maelab")]
    pub data_dir: PathBuf,
    /// auto (the first GPU when libtorch sees one, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, env = "MAELAB_DEVICE", default_value = "auto")]
    pub device: String,
    /// A name for pages and logs (default: host and device).
    #[arg(long, env = "MAELAB_WORKER_NAME")]
    pub name: Option<String>,
    /// Seconds between polls when no notification arrives (the backstop for lost ones).
    #[arg(long, env = "MAELAB_POLL_INTERVAL", default_value_t = 5.0)]
    pub poll_interval: f64,
    /// Seconds a lease lasts without a heartbeat; heartbeats go out every
    /// min(2, lease/3) seconds.
    #[arg(long, env = "MAELAB_LEASE_SECONDS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// First retry delay, in seconds, for a job whose lease expired (doubles per attempt).
    #[arg(long, default_value_t = 5.0)]
    pub rescue_backoff: f64,
    /// Run one job, then exit.
    #[arg(long)]
    pub once: bool,
    /// Do not LISTEN for new jobs; rely on polling (to measure the backstop).
    #[arg(long, hide = true)]
    pub no_listen: bool,
    /// Where decoded datasets are cached (default: <data-dir>/cache).
    #[arg(long, env = "MAELAB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// CPU threads for torch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads building augmented batches.
    #[arg(long, default_value_t = 2)]
    pub loader_threads: usize,
    /// Artifact store: a local folder or s3://bucket/prefix (AWS_* variables
    /// for credentials and endpoint). Default: the one the server published
    /// in the database.
    #[arg(long, env = "MAELAB_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, got {value}"))
}

impl Args {
    fn settings(self) -> anyhow::Result<Settings> {
        let database_url = database_url(
            self.database_url
                .or_else(|| std::env::var("DATABASE_URL").ok()),
            &self.data_dir,
        )?;
        let lease = seconds(self.lease_seconds, "lease-seconds")?;
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "worker".into());
        let device = crate::train::device::resolve_auto(&self.device);
        Ok(Settings {
            database_url,
            name: self.name.unwrap_or_else(|| format!("{host}/{device}")),
            device,
            poll_interval: seconds(self.poll_interval, "poll-interval")?,
            lease,
            heartbeat_interval: (lease / 3).min(Duration::from_secs(2)),
            rescue_backoff: Duration::try_from_secs_f64(self.rescue_backoff)
                .context("--rescue-backoff must be a non-negative number of seconds")?,
            once: self.once,
            listen: !self.no_listen,
            cache_dir: self
                .cache_dir
                .unwrap_or_else(|| self.data_dir.join("cache")),
            threads: self.threads,
            loader_threads: self.loader_threads.max(1),
            artifact_store: self.artifact_store,
            data_dir: self.data_dir,
        })
    }
}

/// The URL given, else the one `maelab serve` wrote to `<data_dir>/database-url`
/// when it started the embedded PostgreSQL (0600: only the account that runs
/// the server can read it, the password included).
fn database_url(given: Option<String>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(url) = given.filter(|u| !u.trim().is_empty()) {
        return Ok(url);
    }
    let path = data_dir.join(maelab_core::db::URL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "" => anyhow::bail!(
                "{} is empty: start `maelab serve` again, or pass --database-url",
                path.display()
            ),
            url => Ok(url.to_string()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no database: pass --database-url, set MAELAB_DATABASE_URL or DATABASE_URL, \
             or start `maelab serve` with its embedded PostgreSQL in --data-dir {} \
             (it writes {})",
            data_dir.display(),
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = Shutdown::default();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested; finishing the current step");
            trigger.trigger();
        });
        let worker = Worker::start(settings, shutdown).await?;
        worker.run().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C, whichever comes first.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_url_wins_over_the_data_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("database-url"), "postgres://file/db\n").expect("write");
        let url = database_url(Some("postgres://given/db".into()), dir.path()).expect("url");
        assert_eq!(url, "postgres://given/db");
    }

    #[test]
    fn without_one_the_servers_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("database-url"),
            "postgres://u:p@127.0.0.1:5999/maelab\n",
        )
        .expect("write");
        for given in [None, Some(String::new()), Some("  ".into())] {
            let url = database_url(given, dir.path()).expect("url");
            assert_eq!(url, "postgres://u:p@127.0.0.1:5999/maelab");
        }
    }

    #[test]
    fn the_data_folder_holds_the_dataset_cache_unless_one_is_named() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: Args,
        }
        let settings = |extra: &[&str]| {
            let mut argv = vec![
                "run",
                "--database-url",
                "postgres://h/db",
                "--device",
                "cpu",
            ];
            argv.extend_from_slice(extra);
            <Cli as clap::Parser>::try_parse_from(argv)
                .expect("arguments")
                .run
                .settings()
                .expect("settings")
        };
        let s = settings(&["--data-dir", "/srv/maelab"]);
        assert_eq!(s.data_dir, PathBuf::from("/srv/maelab"));
        assert_eq!(s.cache_dir, PathBuf::from("/srv/maelab/cache"));
        let s = settings(&["--data-dir", "/srv/maelab", "--cache-dir", "/fast/cache"]);
        assert_eq!(s.cache_dir, PathBuf::from("/fast/cache"));
    }

    #[test]
    fn a_missing_or_empty_file_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = database_url(None, dir.path())
            .expect_err("no file")
            .to_string();
        assert!(err.contains("--database-url"), "{err}");
        assert!(err.contains("maelab serve"), "{err}");
        assert!(
            err.contains(&dir.path().join("database-url").display().to_string()),
            "{err}"
        );

        std::fs::write(dir.path().join("database-url"), "\n").expect("write");
        let err = database_url(None, dir.path())
            .expect_err("empty")
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
