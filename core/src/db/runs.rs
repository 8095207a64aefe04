//! Runs: creating one (its row and its job, in one transaction, after the same
//! validation the worker applies) and the small reads and transitions the
//! server needs. Nothing invalid reaches the queue: a bad config, or a finetune
//! whose parent is missing, unfinished or of another encoder shape, is refused
//! with an error that names the field.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::artifacts::{has_checkpoint, keeps_checkpoint};
use super::queue::{self, CancelOutcome, JobType, NewJob, QueueError};
use crate::config::{ConfigErrors, RunConfig, RunKind};

/// Why a run could not be created or moved.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config (or its parent reference) is not acceptable; each error
    /// names the field. Maps to HTTP 422.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    #[error("run {0} not found")]
    NotFound(Uuid),
    /// Impossible transition (cancel a finished run, retry a running one).
    /// Maps to HTTP 409.
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<QueueError> for RunError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Db(e) => Self::Db(e),
            QueueError::Conflict(m) => Self::Conflict(m),
            other => Self::Conflict(other.to_string()),
        }
    }
}

/// How the run's job goes on the queue.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub job_type: JobType,
    pub priority: i16,
    pub max_attempts: i32,
    /// For `load_test` jobs: what to pretend (`{"epochs": 3, "sleep_ms": 10}`).
    pub payload: serde_json::Value,
    /// Its place in the queue among equal priorities (default: now).
    pub enqueued_at: Option<DateTime<Utc>>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            job_type: JobType::Train,
            priority: 0,
            max_attempts: 3,
            payload: serde_json::json!({}),
            enqueued_at: None,
        }
    }
}

/// The ids of a created run and its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedRun {
    pub run_id: Uuid,
    pub job_id: i64,
}

/// Validate `config`, check a finetune's parent, insert the run and its train
/// job in one transaction (the job insert NOTIFYs idle workers on commit).
pub async fn create_run(
    pool: &PgPool,
    config: &RunConfig,
    created_by: Option<&str>,
) -> Result<CreatedRun, RunError> {
    create_run_with(pool, config, created_by, &JobOptions::default()).await
}

/// [`create_run`] with the job's type, priority, attempts and payload chosen.
pub async fn create_run_with(
    pool: &PgPool,
    config: &RunConfig,
    created_by: Option<&str>,
    job: &JobOptions,
) -> Result<CreatedRun, RunError> {
    let mut tx = pool.begin().await?;
    let created = insert_run(&mut tx, config, created_by, job, None).await?;
    tx.commit().await?;
    tracing::info!(run_id = %created.run_id, job_id = created.job_id, name = %config.name, "run queued");
    Ok(created)
}

/// Where a run of a study belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyLink<'a> {
    pub study_id: Uuid,
    pub arm: &'a str,
    pub seed: u64,
}

/// Validate `config`, check a finetune's parent, and insert the run and its
/// job inside the caller's transaction (the job insert NOTIFYs idle workers
/// when it commits). Studies create their runs through this too, so a study's
/// run is checked exactly like a submitted one.
pub async fn insert_run(
    tx: &mut sqlx::PgConnection,
    config: &RunConfig,
    created_by: Option<&str>,
    job: &JobOptions,
    study: Option<StudyLink<'_>>,
) -> Result<CreatedRun, RunError> {
    config.validate()?;
    let config_json = serde_json::to_value(config)
        .map_err(|e| ConfigErrors::one("", format!("cannot serialise the config: {e}")))?;
    let epochs_total =
        i32::try_from(config.epochs).map_err(|_| ConfigErrors::one("epochs", "is too large"))?;
    let parent_epoch = config
        .parent_epoch
        .map(i32::try_from)
        .transpose()
        .map_err(|_| ConfigErrors::one("parent_epoch", "is too large"))?;
    if let Some(parent) = config.parent_run {
        check_parent(&mut *tx, config, parent, parent_epoch).await?;
    }
    let study_seed = study
        .map(|s| i64::try_from(s.seed))
        .transpose()
        .map_err(|_| ConfigErrors::one("seed", "is too large"))?;
    let run_id: Uuid = sqlx::query_scalar(
        "insert into run (name, kind, model, preset, config, tags, parent_run_id, parent_epoch,
                          epochs_total, created_by, study_id, study_arm, study_seed)
         values ($1, $2::run_kind, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         returning run_id",
    )
    .bind(&config.name)
    .bind(config.kind.as_str())
    .bind(config.model.as_str())
    .bind(&config.preset)
    .bind(&config_json)
    .bind(&config.tags)
    .bind(config.parent_run)
    .bind(parent_epoch)
    .bind(epochs_total)
    .bind(created_by)
    .bind(study.map(|s| s.study_id))
    .bind(study.map(|s| s.arm))
    .bind(study_seed)
    .fetch_one(&mut *tx)
    .await?;
    let job_id = queue::enqueue(
        &mut *tx,
        &NewJob {
            run_id: Some(run_id),
            job_type: job.job_type,
            priority: job.priority,
            max_attempts: job.max_attempts,
            payload: job.payload.clone(),
            enqueued_at: job.enqueued_at,
        },
    )
    .await?;
    Ok(CreatedRun { run_id, job_id })
}

/// A finetune may start only from a pretrain run of the same encoder whose
/// checkpoint at `parent_epoch` exists and will not be deleted by retention
/// (its last epoch once it succeeded, when no epoch is named).
async fn check_parent(
    tx: &mut sqlx::PgConnection,
    config: &RunConfig,
    parent: Uuid,
    parent_epoch: Option<i32>,
) -> Result<(), RunError> {
    let bad = |field: &str, reason: String| RunError::Invalid(ConfigErrors::one(field, reason));
    let row = sqlx::query(
        "select kind::text as kind, status::text as status, config, epochs_total
         from run where run_id = $1 for share",
    )
    .bind(parent)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| bad("parent_run", format!("run {parent} does not exist")))?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let epochs_total: i32 = row.try_get("epochs_total")?;
    if kind != RunKind::Pretrain.as_str() {
        return Err(bad(
            "parent_run",
            format!("run {parent} is a {kind} run; a finetune starts from a pretrain run"),
        ));
    }
    let parent_config: RunConfig = serde_json::from_value(row.try_get("config")?).map_err(|e| {
        bad(
            "parent_run",
            format!("run {parent} has a config this version cannot read: {e}"),
        )
    })?;
    if let Some(field) = encoder_mismatch(&parent_config, config) {
        return Err(bad(
            field,
            format!(
                "differs from the parent run {parent} (preset {}); a finetune must keep the \
                 pretrained encoder's shape",
                parent_config.preset
            ),
        ));
    }
    let epoch = match parent_epoch {
        Some(e) => e,
        None if status == "succeeded" => epochs_total - 1,
        None => {
            return Err(bad(
                "parent_run",
                format!(
                    "run {parent} is {status}; finetune from a succeeded run, or name a \
                     parent_epoch that has a checkpoint"
                ),
            ));
        }
    };
    if epoch >= epochs_total {
        return Err(bad(
            "parent_epoch",
            format!(
                "{epoch} is past the last epoch ({}) of run {parent}",
                epochs_total - 1
            ),
        ));
    }
    let keep_every = i32::try_from(parent_config.checkpoint_keep_every).unwrap_or(i32::MAX);
    if !keeps_checkpoint(epoch, epochs_total, keep_every) {
        return Err(bad(
            "parent_epoch",
            format!(
                "epoch {epoch} of run {parent} is not kept; checkpoints are kept for every \
                 {keep_every}th epoch (0-based {}, {}, ...) and the last ({})",
                keep_every - 1,
                keep_every.saturating_mul(2) - 1,
                epochs_total - 1
            ),
        ));
    }
    if !has_checkpoint(&mut *tx, parent, epoch).await? {
        return Err(bad(
            if parent_epoch.is_some() {
                "parent_epoch"
            } else {
                "parent_run"
            },
            format!("run {parent} ({status}) has no checkpoint at epoch {epoch} yet"),
        ));
    }
    Ok(())
}

/// The first encoder field in which `child` differs from `parent`, if any.
fn encoder_mismatch(parent: &RunConfig, child: &RunConfig) -> Option<&'static str> {
    let (p, c) = (&parent.shape, &child.shape);
    if parent.model != child.model {
        return Some("model");
    }
    let pairs = [
        ("img_size", p.img_size, c.img_size),
        ("patch_size", p.patch_size, c.patch_size),
        ("embed_dim", p.embed_dim, c.embed_dim),
        ("depth", p.depth, c.depth),
        ("num_heads", p.num_heads, c.num_heads),
    ];
    if let Some((field, _, _)) = pairs.iter().find(|(_, a, b)| a != b) {
        return Some(field);
    }
    if p.mlp_ratio != c.mlp_ratio {
        return Some("mlp_ratio");
    }
    let wave_enc = |r: &RunConfig| r.wave_in.is_some_and(|w| w.in_encoder());
    if wave_enc(parent) != wave_enc(child) || (wave_enc(parent) && parent.wave_sr != child.wave_sr)
    {
        return Some("wave_in");
    }
    None
}

/// A run with its job's queue state, as pages and the CLI show it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: Uuid,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub status: String,
    pub error: Option<String>,
    pub parent_run_id: Option<Uuid>,
    pub parent_epoch: Option<i32>,
    pub epochs_total: i32,
    pub config: serde_json::Value,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub job_id: Option<i64>,
    pub job_state: Option<String>,
    pub attempt: Option<i32>,
    pub cancel_requested: Option<bool>,
    /// The last epoch with a stored checkpoint (the resume point).
    pub checkpoint_epoch: Option<i32>,
}

/// One run and its job, or None.
pub async fn get_run(pool: &PgPool, run_id: Uuid) -> Result<Option<RunView>, RunError> {
    let row = sqlx::query(
        "select r.run_id, r.name, r.kind::text as kind, r.model, r.status::text as status,
                r.error, r.parent_run_id, r.parent_epoch, r.epochs_total, r.config, r.created_by,
                r.created_at, r.started_at, r.finished_at, j.job_id, j.state::text as job_state,
                j.attempt, j.cancel_requested, j.checkpoint_epoch
         from run r left join job j using (run_id) where r.run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(RunView {
        run_id: r.try_get("run_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        model: r.try_get("model")?,
        status: r.try_get("status")?,
        error: r.try_get("error")?,
        parent_run_id: r.try_get("parent_run_id")?,
        parent_epoch: r.try_get("parent_epoch")?,
        epochs_total: r.try_get("epochs_total")?,
        config: r.try_get("config")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        job_id: r.try_get("job_id")?,
        job_state: r.try_get("job_state")?,
        attempt: r.try_get("attempt")?,
        cancel_requested: r.try_get("cancel_requested")?,
        checkpoint_epoch: r.try_get("checkpoint_epoch")?,
    }))
}

async fn job_of(pool: &PgPool, run_id: Uuid) -> Result<i64, RunError> {
    sqlx::query_scalar("select job_id from job where run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or(RunError::NotFound(run_id))
}

/// Cancel a run: at once if queued, at the worker's next heartbeat if running;
/// a finished run answers [`RunError::Conflict`].
pub async fn cancel_run(pool: &PgPool, run_id: Uuid) -> Result<CancelOutcome, RunError> {
    let job_id = job_of(pool, run_id).await?;
    queue::request_cancel(pool, job_id)
        .await
        .map_err(|e| match e {
            QueueError::Conflict(_) => RunError::Conflict(format!(
                "run {run_id} has finished; only a queued or running run can be cancelled"
            )),
            other => other.into(),
        })
}

/// Requeue a failed or cancelled run with fresh attempts; it resumes from its
/// last checkpoint. Any other state answers [`RunError::Conflict`].
pub async fn retry_run(pool: &PgPool, run_id: Uuid) -> Result<(), RunError> {
    let job_id = job_of(pool, run_id).await?;
    queue::retry(pool, job_id).await.map_err(|e| match e {
        QueueError::Conflict(_) => RunError::Conflict(format!(
            "run {run_id} is not failed or cancelled; only those can be retried"
        )),
        other => other.into(),
    })
}

/// Stored config of a run, validated again before a worker trains it (the
/// rules may have tightened since it was queued).
pub async fn run_config(pool: &PgPool, run_id: Uuid) -> Result<RunConfig, RunError> {
    let value: serde_json::Value = sqlx::query_scalar("select config from run where run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or(RunError::NotFound(run_id))?;
    let config: RunConfig = serde_json::from_value(value)
        .map_err(|e| ConfigErrors::one("", format!("stored config cannot be read: {e}")))?;
    config.validate()?;
    Ok(config)
}
