//! `maelab serve`: database (given or embedded), migrations, the HTTP server,
//! and a graceful shutdown on SIGTERM or Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use maelab_core::artifact_store::ArtifactStore;
use maelab_core::db;
use tokio::net::TcpListener;

use crate::embedded_pg::EmbeddedPostgres;
use crate::http::{AppState, app};
use crate::settings::ServeSettings;

/// A bound, migrated server that has not started serving yet.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    embedded: Option<EmbeddedPostgres>,
}

impl Server {
    /// Connect (starting the embedded cluster when no URL is set), migrate,
    /// and bind. Every failure here is one line that says what to do.
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        if let Some(dir) = &settings.static_dir
            && !dir.is_dir()
        {
            anyhow::bail!(
                "--static-dir (MAELAB_STATIC_DIR) {} is not a folder; leave it unset to serve the static files built into maelab",
                dir.display()
            );
        }
        let (url, embedded) = match &settings.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = EmbeddedPostgres::start(&settings.data_dir).await.context(
                    "starting the embedded PostgreSQL (set DATABASE_URL to use another)",
                )?;
                (pg.url(), Some(pg))
            }
        };
        if let Some(pg) = &embedded {
            // Workers on this host (scripts/start) read the URL from here; it
            // carries the password, so the file is 0600 and ours alone.
            let path = settings.data_dir.join(db::URL_FILE);
            pg.write_url_file(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let pool = db::connect(&url, settings.db_pool).await?;
        db::migrate(&pool).await?;
        let listener = TcpListener::bind(settings.bind).await.with_context(|| {
            format!(
                "cannot listen on {}: is another process using that port? Choose another with --bind or MAELAB_BIND",
                settings.bind
            )
        })?;
        if let Some(line) = settings.exposure_warning() {
            tracing::warn!("{line}");
        }
        let artifacts = open_artifact_store(&settings).await?;
        db::artifacts::publish_store_url(&pool, artifacts.url())
            .await
            .context("publishing the artifact store's URL for the workers")?;
        let state = AppState::new(pool, settings, artifacts);
        // One LISTEN connection for every page's live updates.
        state.live.spawn_listener(state.db.clone());
        Ok(Self {
            listener,
            state,
            embedded,
        })
    }

    /// The address actually bound (port 0 in tests).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The database URL the server uses (the embedded cluster's when it runs one).
    pub fn database_url(&self) -> Option<String> {
        self.embedded.as_ref().map(EmbeddedPostgres::url)
    }

    /// Serve until SIGTERM or Ctrl-C, then close the pool and stop the
    /// embedded cluster.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            embedded,
        } = self;
        let db = state.db.clone();
        let state_data_dir = state.settings.data_dir.clone();
        let reaper = tokio::spawn(reap_forever(db.clone(), state.artifacts.clone()));
        axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;
        reaper.abort();
        db.close().await;
        if let Some(pg) = embedded {
            let _ = std::fs::remove_file(state_data_dir.join(db::URL_FILE));
            pg.stop()?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Open the artifact store and prove it works (write, read back, delete a
/// probe object): an unreachable or read-only store stops the start here,
/// naming its URL, not at the first upload.
async fn open_artifact_store(settings: &ServeSettings) -> anyhow::Result<ArtifactStore> {
    let url = settings
        .artifact_store_url()
        .context("resolving <data-dir>/artifacts")?;
    let store = ArtifactStore::open(&url, &[]).with_context(|| {
        format!("opening the artifact store {url} (--artifact-store, MAELAB_ARTIFACT_STORE)")
    })?;
    store.probe().await.with_context(|| {
        format!("the artifact store {url} is unreachable or read-only (--artifact-store)")
    })?;
    tracing::info!(url = store.url(), "artifact store ready");
    Ok(store)
}

/// How often the server looks for jobs whose lease expired.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// Backoff before a rescued job may run again (doubled per attempt).
const RESCUE_BACKOFF: Duration = Duration::from_secs(5);
/// How often workers' system samples past their retention are deleted: at
/// start and then hourly, so a server and workers that run for months keep
/// two weeks of samples, not all of them.
const PRUNE_SAMPLES_EVERY: Duration = Duration::from_secs(3600);

/// Requeue (or fail) jobs whose worker died. Workers run the same reaper on
/// every poll; the server runs it too so that jobs are rescued, and shown
/// right, while no worker is alive. An advisory lock keeps it to one at a time.
/// It also marks silent external runs lost, sweeps orphaned objects and
/// prunes old system samples.
async fn reap_forever(db: sqlx::PgPool, artifacts: ArtifactStore) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    let mut prune_due = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= prune_due {
            prune_due += PRUNE_SAMPLES_EVERY;
            maelab_core::db::worker_metrics::prune_expired_quietly(&db).await;
        }
        match maelab_core::db::queue::rescue_expired(&db, RESCUE_BACKOFF).await {
            Ok(r) if r.requeued + r.failed + r.cancelled > 0 => {
                tracing::info!(
                    requeued = r.requeued,
                    failed = r.failed,
                    cancelled = r.cancelled,
                    "rescued expired jobs"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
        // External runs whose client went silent (no worker lease to expire).
        if let Err(e) = maelab_core::db::ingest::mark_lost(&db).await {
            tracing::warn!(error = %e, "lost-run sweep failed");
        }
        // Objects of deleted or replaced artifacts a writer could not delete.
        maelab_core::artifact_store::gc::sweep_quietly(&db, &artifacts).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
