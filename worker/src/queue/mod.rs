//! The queue worker: register, then claim one job at a time and run it until
//! stopped (architecture.md, "The queue").
//!
//! - Idle, it waits on LISTEN `maelab_jobs` (a wake-up only) with a poll every
//!   `poll_interval` as the backstop, so a lost notification delays a job by
//!   at most one interval and an idle worker costs no CPU.
//! - Each poll also runs the reaper ([`queue::rescue_expired`]); the advisory
//!   lock inside lets only one worker at a time do it.
//! - A claimed job gets a heartbeat task on the worker's own connection; its
//!   answers set the cancel and lease-lost flags the training thread reads.
//! - Training runs on a blocking thread; its [`sink::DbSink`] writes through
//!   the lease-fenced functions and answers Stop when a flag is set.
//! - SIGTERM stops the job at its next step, requeues it (with the last
//!   epoch's checkpoint as resume point), marks the worker stopped, exits 0.

pub mod calibrate_job;
pub mod load_test;
pub mod signals;
pub mod sink;
pub mod train_job;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use maelab_core::artifact_store::ArtifactStore;
use maelab_core::db::queue::{self, ClaimedJob, Lease, QueueError};
use maelab_core::db::studies::{self, StudyError};
use maelab_core::db::worker_metrics;
use maelab_core::db::workers::{self, WorkerInfo};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::events::StopReason;
use crate::system::Sampler;
use signals::JobSignals;

/// How a job ended on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Finished,
    Stopped(StopReason),
    /// Cannot succeed (bad data, device error, non-finite loss); not retried.
    Failed(String),
    /// The job recorded its own end with its results, in one transaction
    /// (a calibration): nothing is left to settle.
    Settled,
}

/// Everything `maelab-worker run` is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    pub name: String,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    /// First retry delay after a lost lease; doubles per attempt.
    pub rescue_backoff: Duration,
    /// Run one job, then exit.
    pub once: bool,
    /// LISTEN for wake-ups (off only to measure the poll backstop).
    pub listen: bool,
    pub cache_dir: PathBuf,
    pub threads: Option<usize>,
    pub loader_threads: usize,
    /// Artifact store URL; None: the one the server published in the
    /// database, else `<data_dir>/artifacts`.
    pub artifact_store: Option<String>,
    /// The data folder shared with a server on this host (`--data-dir`).
    pub data_dir: PathBuf,
}

/// Process-wide stop request (SIGTERM, Ctrl-C, a test).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// A registered worker and its connections.
pub struct Worker {
    settings: Settings,
    pool: PgPool,
    /// One connection for heartbeats only.
    hb_pool: PgPool,
    worker_id: Uuid,
    device: tch::Device,
    shutdown: Shutdown,
    wake: Arc<Notify>,
    /// System figures sent with each heartbeat (and each idle poll).
    sampler: Arc<std::sync::Mutex<Sampler>>,
    /// Where checkpoints and images go, and resumes come from.
    artifacts: ArtifactStore,
}

impl Worker {
    /// Check the device, connect, bring the schema up to date, register under
    /// a fresh id. A device this process cannot use is an error here, before
    /// any job is claimed, so no job is failed or requeued for it.
    pub async fn start(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        let device = crate::train::device::parse_device(&settings.device)
            .with_context(|| format!("device {}", settings.device))?;
        let pool = maelab_core::db::connect(&settings.database_url, 4).await?;
        maelab_core::db::migrate(&pool).await?;
        let options = maelab_core::db::parse_url(&settings.database_url)?;
        let hb_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.heartbeat_interval.max(Duration::from_secs(1)))
            .connect_lazy_with(options);
        let info = WorkerInfo {
            name: settings.name.clone(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            device: settings.device.clone(),
            gpu_name: crate::system::gpu_name(device),
            torch_version: crate::doctor::torch_version(),
            pid: i32::try_from(std::process::id()).ok(),
        };
        let artifacts = open_artifact_store(
            &pool,
            settings.artifact_store.as_deref(),
            &settings.data_dir,
        )
        .await?;
        let worker_id = workers::register(&pool, &info)
            .await
            .context("registering the worker")?;
        tracing::info!(%worker_id, name = %settings.name, device = %settings.device, "worker registered");
        worker_metrics::prune_expired_quietly(&pool).await;
        let sampler = Arc::new(std::sync::Mutex::new(Sampler::for_device(device)));
        Ok(Self {
            sampler,
            artifacts,
            settings,
            pool,
            hb_pool,
            worker_id,
            device,
            shutdown,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    /// Claim and run jobs until shutdown (or one job, with `once`), then mark
    /// the worker stopped.
    pub async fn run(self) -> anyhow::Result<()> {
        let listener = self.settings.listen.then(|| {
            tokio::spawn(listen(
                self.settings.database_url.clone(),
                self.wake.clone(),
            ))
        });
        let result = self.claim_loop().await;
        if let Some(task) = listener {
            task.abort();
        }
        if let Err(e) = workers::mark_stopped(&self.pool, self.worker_id).await {
            tracing::warn!(error = %e, "could not mark the worker stopped");
        }
        tracing::info!(worker_id = %self.worker_id, "worker stopped");
        result
    }

    async fn claim_loop(&self) -> anyhow::Result<()> {
        let mut last_rescue: Option<Instant> = None;
        while !self.shutdown.is_set() {
            if last_rescue.is_none_or(|t| t.elapsed() >= self.settings.poll_interval) {
                last_rescue = Some(Instant::now());
                if let Err(e) =
                    queue::rescue_expired(&self.pool, self.settings.rescue_backoff).await
                {
                    tracing::warn!(error = %e, "reaper pass failed");
                }
            }
            // Also marks the worker seen: without a job no lease heartbeat does.
            report_system(
                &self.hb_pool,
                self.worker_id,
                None,
                &self.sampler,
                self.settings.heartbeat_interval,
            )
            .await;
            match queue::claim_next(&self.pool, self.worker_id, self.settings.lease).await {
                Ok(Some(job)) => {
                    self.run_job(job).await;
                    // What the job's steps kept for reuse is idle memory now.
                    crate::allocator::release_free_memory();
                    if self.settings.once {
                        return Ok(());
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                }
                Err(e) => return Err(e).context("claiming a job"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = self.shutdown.wait() => {}
            }
        }
        Ok(())
    }

    /// Run one claimed job to its end and record that end.
    #[tracing::instrument(skip_all, fields(job_id = job.lease.job_id))]
    async fn run_job(&self, job: ClaimedJob) {
        tracing::info!(job_type = %job.job_type, attempt = job.attempt, run_id = ?job.lease.run_id, "job claimed");
        let signals = Arc::new(JobSignals::new(self.shutdown.flag.clone()));
        let heartbeat = tokio::spawn(signals::heartbeat_loop(
            self.hb_pool.clone(),
            job.lease.clone(),
            self.settings.lease,
            self.settings.heartbeat_interval,
            signals.clone(),
            self.sampler.clone(),
        ));
        let dir = std::env::temp_dir().join(format!(
            "maelab-job-{}-{}-{}",
            job.lease.job_id,
            job.lease.lease_token,
            std::process::id()
        ));
        let end = match std::fs::create_dir_all(&dir) {
            Ok(()) => self.execute(&job, &dir, signals.clone()).await,
            Err(e) => JobEnd::Failed(format!("creating {}: {e}", dir.display())),
        };
        heartbeat.abort();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(error = %e, "could not remove the job folder");
        }
        tracing::info!(?end, "job ended");
        self.settle(&job.lease, end).await;
    }

    async fn execute(
        &self,
        job: &ClaimedJob,
        dir: &std::path::Path,
        signals: Arc<JobSignals>,
    ) -> JobEnd {
        let rt = tokio::runtime::Handle::current();
        let extra = serde_json::json!({"attempt": job.attempt, "worker_id": self.worker_id});
        match job.job_type.as_str() {
            "load_test" => {
                let payload = match load_test::parse(&job.payload) {
                    Ok(p) => p,
                    Err(e) => return JobEnd::Failed(format!("{e:#}")),
                };
                let start = job
                    .checkpoint_epoch
                    .map_or(0, |e| u32::try_from(e + 1).unwrap_or(0));
                let epochs_total = i32::try_from(payload.epochs).unwrap_or(i32::MAX);
                let (pool, lease, dir) = (self.pool.clone(), job.lease.clone(), dir.to_path_buf());
                let store = self.artifacts.clone();
                blocking(move || {
                    let mut sink = lease.run_id.map(|_| {
                        sink::DbSink::new(
                            pool,
                            store,
                            lease,
                            signals.clone(),
                            rt,
                            epochs_total,
                            extra,
                        )
                    });
                    load_test::run(
                        &payload,
                        start,
                        &dir,
                        &signals,
                        sink.as_mut().map(|s| s as &mut dyn crate::events::Sink),
                    )
                })
                .await
            }
            "train" => {
                let prepared = match self.prepare_train(job, dir, &signals).await {
                    Ok(p) => p,
                    Err(end) => return end,
                };
                let opts = crate::train::TrainOptions {
                    out_dir: dir.to_path_buf(),
                    device: self.device,
                    threads: self.settings.threads,
                    loader_threads: self.settings.loader_threads,
                    data_on_device: crate::data::DataOnDevice::Auto,
                    resume: prepared.resume,
                    init_checkpoint: prepared.init_checkpoint,
                    cache_dir: self.settings.cache_dir.clone(),
                };
                let epochs_total = i32::try_from(prepared.config.epochs).unwrap_or(i32::MAX);
                let (pool, lease) = (self.pool.clone(), job.lease.clone());
                let store = self.artifacts.clone();
                blocking(move || {
                    let mut sink =
                        sink::DbSink::new(pool, store, lease, signals, rt, epochs_total, extra);
                    Ok(train_job::outcome(crate::train::run(
                        &prepared.config,
                        &opts,
                        &mut sink,
                    )))
                })
                .await
            }
            "calibrate" => self.calibrate(job, signals).await,
            other => JobEnd::Failed(format!("unknown job type `{other}`")),
        }
    }

    /// A study arm's calibration: measure on a blocking thread, then record
    /// it, size the arm's chains and queue them ([`calibrate_job`]).
    async fn calibrate(&self, job: &ClaimedJob, signals: Arc<JobSignals>) -> JobEnd {
        let target = match calibrate_job::target(&self.pool, job).await {
            Ok(t) => t,
            Err(end) => return end,
        };
        let (device, cache_dir, threads) = (
            self.device,
            self.settings.cache_dir.clone(),
            self.settings.threads,
        );
        let measuring = target.clone();
        let measured = tokio::task::spawn_blocking(move || {
            if let Some(n) = threads {
                tch::set_num_threads(n.max(1) as i32);
            }
            calibrate_job::measure(&measuring, device, &cache_dir, &signals)
        })
        .await;
        let measured = match measured {
            Ok(Ok(Ok(m))) => m,
            Ok(Ok(Err(end))) => return end,
            Ok(Err(e)) => return JobEnd::Failed(format!("calibration: {e:#}")),
            Err(e) => return JobEnd::Failed(format!("the job's thread panicked: {e}")),
        };
        let info = calibrate_job::device_info(device);
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match studies::finish_calibration(&self.pool, &job.lease, &target, &info, &measured)
                .await
            {
                Ok(()) => return JobEnd::Settled,
                Err(StudyError::Queue(QueueError::LeaseLost { .. })) => {
                    return JobEnd::Stopped(StopReason::LeaseLost);
                }
                Err(StudyError::Db(e))
                    if queue::is_transient_sqlx(&e) && started.elapsed() < sink::WRITE_PATIENCE =>
                {
                    tracing::warn!(error = %e, "recording the calibration failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return JobEnd::Failed(format!("calibration: {e}")),
            }
        }
    }

    /// [`train_job::prepare`], retried through connection errors for as long
    /// as a write would be: a PostgreSQL restart while a job starts (or while
    /// a large checkpoint downloads) must not fail the run for good. A stop
    /// flag (cancel, lost lease, shutdown) ends the wait.
    async fn prepare_train(
        &self,
        job: &ClaimedJob,
        dir: &std::path::Path,
        signals: &JobSignals,
    ) -> Result<train_job::Prepared, JobEnd> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match train_job::prepare(&self.pool, &self.artifacts, job, dir).await {
                Ok(p) => return Ok(p),
                Err(e)
                    if train_job::is_transient(&e) && started.elapsed() < sink::WRITE_PATIENCE =>
                {
                    if let Some(reason) = signals.stop_reason() {
                        return Err(JobEnd::Stopped(reason));
                    }
                    tracing::warn!(error = %format!("{e:#}"), "preparing the job failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(JobEnd::Failed(format!("{e:#}"))),
            }
        }
    }

    /// Record how the job ended, retrying through connection errors: a
    /// finished job must not be trained again because PostgreSQL restarted
    /// at the wrong moment. A lost lease means someone else owns the job now.
    async fn settle(&self, lease: &Lease, end: JobEnd) {
        let mut wait = Duration::from_millis(100);
        loop {
            let result = match &end {
                JobEnd::Finished => queue::complete(&self.pool, lease).await,
                JobEnd::Failed(reason) => queue::fail(&self.pool, lease, reason).await,
                JobEnd::Stopped(StopReason::Cancelled) => {
                    queue::finish_cancelled(&self.pool, lease).await
                }
                JobEnd::Stopped(StopReason::Shutdown) => queue::requeue(&self.pool, lease).await,
                JobEnd::Stopped(StopReason::LeaseLost) | JobEnd::Settled => return,
            };
            match result {
                Ok(()) => return,
                Err(QueueError::LeaseLost { .. }) => {
                    tracing::warn!("lease lost before the job's end was recorded");
                    return;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "recording the job's end failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, "recording the job's end failed; the reaper will rescue it");
                    return;
                }
            }
        }
    }
}

/// Run `f` on a blocking thread; an error or a panic fails the job with the reason.
async fn blocking<F>(f: F) -> JobEnd
where
    F: FnOnce() -> anyhow::Result<JobEnd> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => JobEnd::Failed(format!("{e:#}")),
        Err(e) => JobEnd::Failed(format!("the job's thread panicked: {e}")),
    }
}

/// LISTEN on `maelab_jobs` and wake the claim loop on every notification.
/// sqlx's listener reconnects by itself; a reconnect may have missed
/// notifications, so it wakes the loop too.
async fn listen(url: String, wake: Arc<Notify>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen("maelab_jobs").await {
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::info!("LISTEN connection re-established");
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Sample this process and its GPU and store the sample, tagged with the
/// job's run. Best effort: a failed write loses one point of a chart, never
/// the job, so it is logged at debug and not retried.
pub(crate) async fn report_system(
    pool: &PgPool,
    worker_id: Uuid,
    job_id: Option<i64>,
    sampler: &std::sync::Mutex<Sampler>,
    timeout: Duration,
) {
    let sample = match sampler.lock() {
        Ok(mut s) => s.sample(),
        Err(_) => return, // a panic mid-sample; skip reporting rather than spread it
    };
    let write = worker_metrics::record(pool, worker_id, job_id, &sample);
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "could not store a system sample"),
        Err(_) => tracing::debug!("storing a system sample timed out"),
    }
}

/// The artifact store: `--artifact-store` (MAELAB_ARTIFACT_STORE), else the
/// URL the server published in the database, else `<data_dir>/artifacts`, the
/// server's own default (a worker on the server's host with no server yet).
/// Probed like the server's: an unreachable or read-only store stops the
/// start, naming its URL.
async fn open_artifact_store(
    pool: &PgPool,
    flag: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<ArtifactStore> {
    let url = match flag {
        Some(url) => url.to_string(),
        None => match maelab_core::db::artifacts::published_store_url(pool)
            .await
            .context("reading the artifact store's URL the server published")?
        {
            Some(url) => url,
            None => {
                let dir = data_dir.join("artifacts");
                let dir = std::path::absolute(&dir)
                    .with_context(|| format!("resolving {}", dir.display()))?;
                tracing::warn!(
                    dir = %dir.display(),
                    "no --artifact-store and no server has published one; using a local folder"
                );
                dir.display().to_string()
            }
        },
    };
    let store = ArtifactStore::open(&url, &[])
        .with_context(|| format!("opening the artifact store {url} (--artifact-store)"))?;
    store.probe().await.with_context(|| {
        format!("the artifact store {url} is unreachable or read-only (--artifact-store)")
    })?;
    tracing::info!(url = store.url(), "artifact store ready");
    Ok(store)
}
