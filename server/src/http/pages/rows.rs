//! The rows the pages and their live streams show, and the read queries that
//! fetch them. Kept apart from the API's read model so the pages can change
//! shape (columnar JSON for charts, one summary row per run for the list)
//! without touching the API's contract.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Most step rows sent in one batch (history pages through them in chunks).
pub const STEP_CHUNK: i64 = 5000;

/// One epoch as the run page charts it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EpochRow {
    #[serde(skip)]
    pub run_id: Uuid,
    pub epoch: i32,
    pub train_lr: f64,
    pub train_loss: f64,
    pub test_loss: Option<f64>,
    pub test_acc1: Option<f64>,
    pub test_acc5: Option<f64>,
    pub psnr: Option<f64>,
    pub hf_ratio: Option<f64>,
    pub epoch_seconds: f64,
    pub images_per_second: Option<f64>,
    pub n_parameters: Option<i64>,
}

/// One sampled training step.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    #[serde(skip)]
    pub run_id: Uuid,
    pub epoch: i32,
    pub step: i32,
    pub progress: f64,
    pub train_loss: f64,
    pub lr: f64,
    pub images_per_second: Option<f64>,
}

/// A stored reconstruction image (served as `/runs/{id}/artifacts/{artifact_id}`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReconRow {
    #[serde(skip)]
    pub run_id: Uuid,
    pub artifact_id: i64,
    pub epoch: Option<i32>,
    pub name: String,
}

/// One line of the runs table; also what the list stream sends when a run
/// appears or changes status.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: Uuid,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub preset: String,
    pub status: String,
    pub tags: Vec<String>,
    pub epochs_total: i32,
    pub epochs_done: i64,
    pub best_acc1: Option<f64>,
    pub best_acc5: Option<f64>,
    pub last_loss: Option<f64>,
    pub train_seconds: Option<f64>,
    pub mean_images_per_second: Option<f64>,
    pub n_parameters: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
}

impl RunRow {
    /// Wall time from start to finish (or to now while it runs), in seconds.
    pub fn duration_seconds(&self) -> Option<i64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or_else(Utc::now);
        Some((end - start).num_seconds().max(0))
    }
}

/// The select list and joins of [`RunRow`]; callers add `where`, `order by`.
pub const RUN_ROW_SELECT: &str = "
    select r.run_id, r.name, r.kind::text as kind, r.model, r.preset, r.status::text as status,
           r.tags, r.epochs_total, r.epochs_done::bigint as epochs_done, r.best_acc1,
           r.best_acc5, r.last_train_loss as last_loss, r.train_seconds,
           r.mean_images_per_second,
           coalesce(r.n_parameters, r.epoch_n_parameters) as n_parameters, r.error, r.created_at,
           r.started_at, r.finished_at, w.name as worker
    from run r
    left join job j on j.run_id = r.run_id
    left join worker w on w.worker_id = j.worker_id";

/// [`RUN_ROW_SELECT`] over `source` (a subquery of `run` rows) instead of
/// the whole table: the list picks its page of runs first, so only 50 runs
/// are joined with their job and worker.
pub fn run_row_select_from(source: &str) -> String {
    RUN_ROW_SELECT.replacen("from run r", &format!("from {source} r"), 1)
}

/// One run's summary row, or None.
pub async fn run_row(db: &PgPool, run_id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as::<_, RunRow>(&format!("{RUN_ROW_SELECT} where r.run_id = $1"))
        .bind(run_id)
        .fetch_optional(db)
        .await
}

/// Epoch rows of a run after `after` (-1: all), in order.
pub async fn epochs_after(
    db: &PgPool,
    run_id: Uuid,
    after: i32,
) -> Result<Vec<EpochRow>, sqlx::Error> {
    sqlx::query_as::<_, EpochRow>(
        "select run_id, epoch, train_lr, train_loss, test_loss, test_acc1, test_acc5, psnr,
                hf_ratio, epoch_seconds, images_per_second, n_parameters
         from epoch_metric where run_id = $1 and epoch > $2 order by epoch",
    )
    .bind(run_id)
    .bind(after)
    .fetch_all(db)
    .await
}

/// One epoch row.
pub async fn epoch_row(
    db: &PgPool,
    run_id: Uuid,
    epoch: i32,
) -> Result<Option<EpochRow>, sqlx::Error> {
    sqlx::query_as::<_, EpochRow>(
        "select run_id, epoch, train_lr, train_loss, test_loss, test_acc1, test_acc5, psnr,
                hf_ratio, epoch_seconds, images_per_second, n_parameters
         from epoch_metric where run_id = $1 and epoch = $2",
    )
    .bind(run_id)
    .bind(epoch)
    .fetch_optional(db)
    .await
}

/// Up to `limit` step rows after step `after`, oldest first.
pub async fn steps_after(
    db: &PgPool,
    run_id: Uuid,
    after: i32,
    limit: i64,
) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as::<_, StepRow>(
        "select run_id, epoch, step, progress, train_loss, lr, images_per_second
         from step_metric where run_id = $1 and step > $2 order by step limit $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Every step row after `after`, fetched chunk by chunk.
pub async fn all_steps_after(
    db: &PgPool,
    run_id: Uuid,
    mut after: i32,
) -> Result<Vec<StepRow>, sqlx::Error> {
    let mut all = Vec::new();
    loop {
        let chunk = steps_after(db, run_id, after, STEP_CHUNK).await?;
        let full = i64::try_from(chunk.len()).unwrap_or(i64::MAX) >= STEP_CHUNK;
        if let Some(last) = chunk.last() {
            after = last.step;
        }
        all.extend(chunk);
        if !full {
            return Ok(all);
        }
    }
}

/// The newest `limit` step rows after `after`, oldest first. The hub uses it
/// so a burst never makes it send a run's whole history.
pub async fn latest_steps_after(
    db: &PgPool,
    run_id: Uuid,
    after: i32,
    limit: i64,
) -> Result<Vec<StepRow>, sqlx::Error> {
    let mut rows = sqlx::query_as::<_, StepRow>(
        "select run_id, epoch, step, progress, train_loss, lr, images_per_second
         from step_metric where run_id = $1 and step > $2 order by step desc limit $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// Reconstruction artifacts of a run with an id above `after`, in id order.
pub async fn recons_after(
    db: &PgPool,
    run_id: Uuid,
    after: i64,
) -> Result<Vec<ReconRow>, sqlx::Error> {
    sqlx::query_as::<_, ReconRow>(
        "select run_id, artifact_id, epoch, name from artifact
         where run_id = $1 and kind = 'reconstruction' and artifact_id > $2
         order by artifact_id",
    )
    .bind(run_id)
    .bind(after)
    .fetch_all(db)
    .await
}
