//! The job queue: every statement that moves a job between states.
//!
//! The rules (architecture.md, "The queue"; River's `JobGetAvailable`):
//! - a claim takes the best queued job with `FOR UPDATE SKIP LOCKED` (priority,
//!   then age, then id) and, in the same statement, marks it running, bumps its
//!   attempt and its **lease token**, and records the worker and the lease;
//! - every later write by that worker matches `(job_id, lease_token, running)`,
//!   so a worker whose lease was taken away (expired, rescued, claimed again)
//!   learns it from the first write that matches no row ([`QueueError::LeaseLost`]);
//! - the run's status follows its job's in the same statement, so pages that
//!   read `run` never see the two disagree;
//! - all times are the database's `now()`, never a worker's clock.

use std::time::Duration;

use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

/// Advisory lock key that lets one reaper at a time rescue expired leases
/// ("maelab-rescue" in ASCII, truncated to 63 bits).
pub const RESCUE_LOCK_KEY: i64 = 0x6d61_656c_6162_7265;

/// Longest wait between two attempts of a rescued job, however many it had.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a queue statement did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The job is no longer running under this lease token: it expired and was
    /// rescued, was cancelled and finalised, or was claimed by another worker.
    /// The worker must stop the job at once and write nothing more.
    #[error(
        "lease lost on job {job_id} (token {lease_token}): another worker or the reaper owns it now"
    )]
    LeaseLost { job_id: i64, lease_token: i64 },
    /// No job or run with that id.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The transition asked for is impossible from the current state
    /// (cancelling a finished run, retrying a running one). Maps to HTTP 409.
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl QueueError {
    /// True for errors that a retry after a short wait can cure: the
    /// connection dropped, PostgreSQL is restarting, the pool is exhausted.
    /// A worker keeps its job through these instead of failing it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => is_transient_sqlx(e),
            _ => false,
        }
    }
}

/// See [`QueueError::is_transient`].
pub fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin/crash shutdown,
            // cannot connect now; 40001/40P01: serialization/deadlock.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }),
        sqlx::Error::Protocol(msg) => msg.contains("closed") || msg.contains("connection"),
        _ => false,
    }
}

/// What a worker holds while it runs a job: the fence for every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: i64,
    /// None only for run-less load-test jobs.
    pub run_id: Option<Uuid>,
    pub lease_token: i64,
    pub worker_id: Uuid,
}

/// A job as [`claim_next`] hands it to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub lease: Lease,
    /// `train` or `load_test`.
    pub job_type: String,
    pub payload: serde_json::Value,
    /// This claim's attempt number, 1-based.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The checkpoint artifact to resume from, if an earlier attempt left one.
    pub checkpoint_id: Option<i64>,
    pub checkpoint_epoch: Option<i32>,
}

/// What to put on the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub run_id: Option<Uuid>,
    pub job_type: JobType,
    pub priority: i16,
    pub max_attempts: i32,
    pub payload: serde_json::Value,
    /// Its place in the queue among jobs of equal priority (default: now).
    pub enqueued_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The kinds of work a job can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobType {
    /// Train the run's config with the trainer.
    Train,
    /// Train nothing: sleep and write fake epoch rows through the same fenced
    /// path, so queue tests and benchmarks need neither torch nor a GPU.
    LoadTest,
    /// Measure one study arm's images/second for its seconds budget, then
    /// size and queue the arm's runs (`db::studies::finish_calibration`).
    Calibrate,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::LoadTest => "load_test",
            Self::Calibrate => "calibrate",
        }
    }
}

impl NewJob {
    /// A load-test job without a run: for throughput benchmarks.
    pub fn load_test(payload: serde_json::Value) -> Self {
        Self {
            run_id: None,
            job_type: JobType::LoadTest,
            priority: 0,
            max_attempts: 3,
            payload,
            enqueued_at: None,
        }
    }
}

/// Put a job on the queue; the insert trigger NOTIFYs `maelab_jobs`, which
/// wakes idle workers. Returns the job id.
pub async fn enqueue<'e>(db: impl PgExecutor<'e>, job: &NewJob) -> Result<i64, QueueError> {
    let row = sqlx::query(
        "insert into job (run_id, job_type, priority, max_attempts, payload, enqueued_at)
         values ($1, $2, $3, $4, $5, coalesce($6, now())) returning job_id",
    )
    .bind(job.run_id)
    .bind(job.job_type.as_str())
    .bind(job.priority)
    .bind(job.max_attempts)
    .bind(&job.payload)
    .bind(job.enqueued_at)
    .fetch_one(db)
    .await?;
    Ok(row.try_get("job_id")?)
}

/// Claim the best job that is due, for `worker_id`, leased for `lease`.
///
/// One statement: the `SKIP LOCKED` pick (so concurrent claimers never wait on
/// or take the same row), the job's move to running with `attempt + 1` and
/// `lease_token + 1`, and the run's move to running. A job whose attempts are
/// used up is never picked (the reaper fails those), so the claim cannot trip
/// the `attempt <= max_attempts` check. Returns None when nothing is due.
pub async fn claim_next(
    pool: &PgPool,
    worker_id: Uuid,
    lease: Duration,
) -> Result<Option<ClaimedJob>, QueueError> {
    let row = sqlx::query(
        "with next as (
             select job_id from job
             where state = 'queued' and run_after <= now() and attempt < max_attempts
             order by priority desc, enqueued_at, job_id
             limit 1
             for update skip locked
         ), claimed as (
             update job j set
                 state = 'running',
                 attempt = j.attempt + 1,
                 lease_token = j.lease_token + 1,
                 worker_id = $1,
                 lease_expires_at = now() + make_interval(secs => $2),
                 heartbeat_at = now(),
                 started_at = coalesce(j.started_at, now()),
                 error = null
             from next where j.job_id = next.job_id
             returning j.job_id, j.run_id, j.lease_token, j.job_type, j.payload,
                       j.attempt, j.max_attempts, j.checkpoint_id, j.checkpoint_epoch
         ), run_started as (
             update run r set status = 'running', started_at = coalesce(r.started_at, now())
             from claimed where r.run_id = claimed.run_id
         )
         select * from claimed",
    )
    .bind(worker_id)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(ClaimedJob {
        lease: Lease {
            job_id: row.try_get("job_id")?,
            run_id: row.try_get("run_id")?,
            lease_token: row.try_get("lease_token")?,
            worker_id,
        },
        job_type: row.try_get("job_type")?,
        payload: row.try_get("payload")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        checkpoint_id: row.try_get("checkpoint_id")?,
        checkpoint_epoch: row.try_get("checkpoint_epoch")?,
    }))
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Someone asked to cancel the job: stop at the next step.
    pub cancel_requested: bool,
}

/// Extend the lease to `now() + lease` and bump the worker's `last_seen_at`.
///
/// The answer carries the cancel flag, so cancel reaches a busy worker within
/// one heartbeat interval. No row matched means the lease is gone:
/// [`QueueError::LeaseLost`], and the worker must stop the job.
pub async fn heartbeat<'e>(
    db: impl PgExecutor<'e>,
    lease: &Lease,
    duration: Duration,
) -> Result<Heartbeat, QueueError> {
    let row = sqlx::query(
        "with hb as (
             update job set lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
             where job_id = $1 and lease_token = $2 and state = 'running'
             returning cancel_requested, worker_id
         ), seen as (
             update worker w set last_seen_at = now() from hb where w.worker_id = hb.worker_id
         )
         select cancel_requested from hb",
    )
    .bind(lease.job_id)
    .bind(lease.lease_token)
    .bind(duration.as_secs_f64())
    .fetch_optional(db)
    .await?;
    match row {
        Some(row) => Ok(Heartbeat {
            cancel_requested: row.try_get("cancel_requested")?,
        }),
        None => Err(lost(lease)),
    }
}

fn lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost {
        job_id: lease.job_id,
        lease_token: lease.lease_token,
    }
}

/// The end states a worker can put its own job in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Succeeded,
    Failed,
    Cancelled,
}

impl Finish {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Move the leased job and its run to a terminal state, fenced by the lease,
/// inside the caller's transaction.
pub(crate) async fn finish_in(
    tx: &mut sqlx::PgConnection,
    lease: &Lease,
    state: Finish,
    error: Option<&str>,
) -> Result<(), QueueError> {
    let row = sqlx::query(
        "with done as (
             update job set state = $3::job_state, finished_at = now(), lease_expires_at = null,
                            error = $4
             where job_id = $1 and lease_token = $2 and state = 'running'
             returning run_id
         ), run_done as (
             update run r set status = $3::text::run_status, finished_at = now(), error = $4
             from done where r.run_id = done.run_id
         )
         select 1 as one from done",
    )
    .bind(lease.job_id)
    .bind(lease.lease_token)
    .bind(state.as_str())
    .bind(error)
    .fetch_optional(tx)
    .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(lost(lease)),
    }
}

async fn finish(
    pool: &PgPool,
    lease: &Lease,
    state: Finish,
    error: Option<&str>,
) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    finish_in(&mut tx, lease, state, error).await?;
    tx.commit().await?;
    Ok(())
}

/// The job ran to its end: job and run succeeded. When the run is the
/// pretrain of a study chain, its finetune is queued in the same transaction
/// (`studies::advance_chain`), so a chain never stalls between two stages.
pub async fn complete(pool: &PgPool, lease: &Lease) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    finish_in(&mut tx, lease, Finish::Succeeded, None).await?;
    if let Some(run_id) = lease.run_id {
        match super::studies::advance_chain(&mut tx, run_id).await {
            Ok(()) => {}
            Err(super::studies::StudyError::Db(e)) => return Err(e.into()),
            Err(super::studies::StudyError::Queue(e)) => return Err(e),
            // Not the queue's to refuse: the run did succeed.
            Err(e) => tracing::error!(%run_id, error = %e, "study chain not advanced"),
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The job cannot succeed (bad data, no device, non-finite loss): job and run
/// failed with `reason`, not retried. A lost lease is the reaper's business,
/// not this.
pub async fn fail(pool: &PgPool, lease: &Lease, reason: &str) -> Result<(), QueueError> {
    finish(pool, lease, Finish::Failed, Some(reason)).await
}

/// The worker stopped the job because cancel was requested: job and run
/// cancelled, the device is free.
pub async fn finish_cancelled(pool: &PgPool, lease: &Lease) -> Result<(), QueueError> {
    finish(pool, lease, Finish::Cancelled, Some("cancelled")).await
}

/// Graceful shutdown: give the job back at once, with its checkpoint pointer,
/// for any worker to resume. The attempt is handed back too, so restarting
/// workers never uses up a job's attempts.
pub async fn requeue(pool: &PgPool, lease: &Lease) -> Result<(), QueueError> {
    let row = sqlx::query(
        "with back as (
             update job set state = 'queued', worker_id = null, lease_expires_at = null,
                            attempt = greatest(attempt - 1, 0), run_after = now()
             where job_id = $1 and lease_token = $2 and state = 'running'
             returning run_id
         ), run_back as (
             update run r set status = 'queued' from back where r.run_id = back.run_id
         )
         select 1 as one from back",
    )
    .bind(lease.job_id)
    .bind(lease.lease_token)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(lost(lease)),
    }
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was still queued: cancelled on the spot.
    Cancelled,
    /// The job is running: the flag is set, and the worker sees it at its next
    /// heartbeat and stops.
    Requested,
}

/// Cancel job `job_id`: a queued job is cancelled at once, a running one gets
/// its flag set. A finished job answers [`QueueError::Conflict`].
pub async fn request_cancel(pool: &PgPool, job_id: i64) -> Result<CancelOutcome, QueueError> {
    let row = sqlx::query(
        "with target as (
             select job_id, state from job where job_id = $1 for update
         ), queued as (
             update job j set state = 'cancelled', finished_at = now(), error = 'cancelled'
             from target where j.job_id = target.job_id and target.state = 'queued'
             returning j.run_id
         ), queued_run as (
             update run r set status = 'cancelled', finished_at = now(), error = 'cancelled'
             from queued where r.run_id = queued.run_id
         ), running as (
             update job j set cancel_requested = true
             from target where j.job_id = target.job_id and target.state = 'running'
             returning j.job_id
         )
         select state::text as state from target",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(QueueError::NotFound {
            what: "job",
            id: job_id.to_string(),
        });
    };
    let state: String = row.try_get("state")?;
    match state.as_str() {
        "queued" => Ok(CancelOutcome::Cancelled),
        "running" => Ok(CancelOutcome::Requested),
        other => Err(QueueError::Conflict(format!(
            "job {job_id} is {other}; only a queued or running job can be cancelled"
        ))),
    }
}

/// What one pass of the reaper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Put back on the queue, due after their backoff.
    pub requeued: u64,
    /// Out of attempts: failed with the reason.
    pub failed: u64,
    /// Their cancel flag was set: cancelled rather than run again.
    pub cancelled: u64,
    /// Another reaper held the lock; this pass did nothing.
    pub skipped: bool,
}

/// Rescue running jobs whose lease expired (their worker died, hung, or lost
/// the database for longer than a lease).
///
/// Decided from the lease alone, never from elapsed run time or from whether a
/// worker row exists, so long healthy jobs are never touched. A job with
/// attempts left is requeued, due after `base_backoff * 2^(attempt-1)` (capped
/// at [`MAX_BACKOFF`]), keeping its checkpoint pointer so the next claimer
/// resumes; one out of attempts is failed with the reason; one whose cancel was
/// requested is cancelled. One reaper at a time, under a transaction-scoped
/// advisory lock: a second concurrent call returns `skipped` at once.
pub async fn rescue_expired(pool: &PgPool, base_backoff: Duration) -> Result<Rescued, QueueError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(RESCUE_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Rescued {
            skipped: true,
            ..Rescued::default()
        });
    }
    let rows = sqlx::query(
        "with expired as (
             select job_id from job
             where state = 'running' and lease_expires_at < now()
             for update skip locked
         ), decided as (
             select j.job_id,
                    case when j.cancel_requested then 'cancelled'
                         when j.attempt >= j.max_attempts then 'failed'
                         else 'queued' end as next_state
             from job j join expired using (job_id)
         ), moved as (
             update job j set
                 state = d.next_state::job_state,
                 lease_expires_at = null,
                 worker_id = case when d.next_state = 'queued' then null else j.worker_id end,
                 run_after = case when d.next_state = 'queued'
                     then now() + least(make_interval(secs => $1 * power(2, greatest(j.attempt - 1, 0))),
                                        make_interval(secs => $2))
                     else j.run_after end,
                 finished_at = case when d.next_state = 'queued' then null else now() end,
                 error = case d.next_state
                     when 'failed' then format('lease expired on attempt %s of %s (worker %s stopped heartbeating); no attempts left',
                                               j.attempt, j.max_attempts, j.worker_id)
                     when 'cancelled' then 'cancelled'
                     else format('lease expired on attempt %s (worker %s stopped heartbeating); requeued',
                                 j.attempt, j.worker_id) end
             from decided d where j.job_id = d.job_id
             returning j.run_id, d.next_state, j.error
         ), run_moved as (
             update run r set
                 status = m.next_state::run_status,
                 finished_at = case when m.next_state = 'queued' then null else now() end,
                 error = case when m.next_state = 'queued' then null else m.error end
             from moved m where r.run_id = m.run_id
         )
         select next_state, count(*) as n from moved group by next_state",
    )
    .bind(base_backoff.as_secs_f64())
    .bind(MAX_BACKOFF.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out = Rescued::default();
    for row in rows {
        let state: String = row.try_get("next_state")?;
        let n: i64 = row.try_get("n")?;
        let n = u64::try_from(n).unwrap_or(0);
        match state.as_str() {
            "queued" => out.requeued += n,
            "failed" => out.failed += n,
            _ => out.cancelled += n,
        }
    }
    if out.requeued + out.failed + out.cancelled > 0 {
        tracing::info!(
            requeued = out.requeued,
            failed = out.failed,
            cancelled = out.cancelled,
            "rescued jobs with expired leases"
        );
    }
    Ok(out)
}

/// Put a failed or cancelled job back on the queue with fresh attempts. It
/// keeps its checkpoint pointer, so it resumes where it stopped. A queued,
/// running or succeeded job answers [`QueueError::Conflict`].
pub async fn retry(pool: &PgPool, job_id: i64) -> Result<(), QueueError> {
    let row = sqlx::query(
        "with target as (
             select job_id, state from job where job_id = $1 for update
         ), again as (
             update job j set state = 'queued', attempt = 0, cancel_requested = false,
                              error = null, finished_at = null, worker_id = null,
                              lease_expires_at = null, run_after = now(), enqueued_at = now()
             from target where j.job_id = target.job_id and target.state in ('failed', 'cancelled')
             returning j.run_id
         ), run_again as (
             update run r set status = 'queued', finished_at = null, error = null
             from again where r.run_id = again.run_id
         )
         select state::text as state from target",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(QueueError::NotFound {
            what: "job",
            id: job_id.to_string(),
        });
    };
    let state: String = row.try_get("state")?;
    match state.as_str() {
        "failed" | "cancelled" => Ok(()),
        other => Err(QueueError::Conflict(format!(
            "job {job_id} is {other}; only a failed or cancelled job can be retried"
        ))),
    }
}

/// Check, inside a write transaction, that `lease` still owns its job, and
/// lock the job row until the transaction ends so the reaper cannot requeue
/// it halfway through the write. Every metric and artifact write starts here.
pub(crate) async fn fence(tx: &mut sqlx::PgConnection, lease: &Lease) -> Result<(), QueueError> {
    let row = sqlx::query(
        "select 1 as one from job where job_id = $1 and lease_token = $2 and state = 'running'
         for no key update",
    )
    .bind(lease.job_id)
    .bind(lease.lease_token)
    .fetch_optional(tx)
    .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(lost(lease)),
    }
}
