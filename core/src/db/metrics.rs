//! The worker's metric writes, each fenced by its lease: a worker that lost its
//! job (expired, rescued, cancelled) gets [`QueueError::LeaseLost`] and writes
//! nothing, so a stale worker can never overwrite its successor's rows.
//!
//! Rows are upserted on (run, epoch) and (run, step): a resumed attempt that
//! repeats an epoch replaces the row instead of adding a second one.

use sqlx::PgPool;

use super::artifacts::put_checkpoint;
use super::queue::{Lease, QueueError, fence};

/// One epoch's metrics (the MAE log.txt keys plus maelab's extras).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: i32,
    pub train_lr: f64,
    pub train_loss: f64,
    pub test_loss: Option<f64>,
    pub test_acc1: Option<f64>,
    pub test_acc5: Option<f64>,
    pub n_parameters: Option<i64>,
    pub psnr: Option<f64>,
    pub hf_ratio: Option<f64>,
    pub epoch_seconds: f64,
    pub images_per_second: Option<f64>,
    pub extra: serde_json::Value,
}

/// One sampled training step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub epoch: i32,
    pub step: i32,
    pub progress: f64,
    pub train_loss: f64,
    pub lr: f64,
    pub images_per_second: Option<f64>,
}

fn run_of(lease: &Lease) -> Result<uuid::Uuid, QueueError> {
    lease.run_id.ok_or_else(|| {
        QueueError::Conflict(format!(
            "job {} has no run to record metrics for",
            lease.job_id
        ))
    })
}

async fn upsert_epoch(
    tx: &mut sqlx::PgConnection,
    run_id: uuid::Uuid,
    row: &EpochRecord,
) -> Result<(), QueueError> {
    sqlx::query(
        "insert into epoch_metric (run_id, epoch, train_lr, train_loss, test_loss, test_acc1,
             test_acc5, n_parameters, psnr, hf_ratio, epoch_seconds, images_per_second, extra)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         on conflict (run_id, epoch) do update set
             train_lr = excluded.train_lr, train_loss = excluded.train_loss,
             test_loss = excluded.test_loss, test_acc1 = excluded.test_acc1,
             test_acc5 = excluded.test_acc5, n_parameters = excluded.n_parameters,
             psnr = excluded.psnr, hf_ratio = excluded.hf_ratio,
             epoch_seconds = excluded.epoch_seconds,
             images_per_second = excluded.images_per_second, extra = excluded.extra,
             recorded_at = now()",
    )
    .bind(run_id)
    .bind(row.epoch)
    .bind(row.train_lr)
    .bind(row.train_loss)
    .bind(row.test_loss)
    .bind(row.test_acc1)
    .bind(row.test_acc5)
    .bind(row.n_parameters)
    .bind(row.psnr)
    .bind(row.hf_ratio)
    .bind(row.epoch_seconds)
    .bind(row.images_per_second)
    .bind(&row.extra)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Upsert one epoch row, fenced by `lease` (its NOTIFY goes out on commit).
pub async fn record_epoch(
    pool: &PgPool,
    lease: &Lease,
    row: &EpochRecord,
) -> Result<(), QueueError> {
    let run_id = run_of(lease)?;
    let mut tx = pool.begin().await?;
    fence(&mut tx, lease).await?;
    upsert_epoch(&mut tx, run_id, row).await?;
    tx.commit().await?;
    Ok(())
}

/// Upsert epoch `row` together with its checkpoint (the artifacts in
/// `files`, the first being the weights the pointer names) and move the
/// job's checkpoint pointer to it, all in one transaction: a crash leaves
/// either both or neither, so a resumed attempt never skips or repeats an
/// epoch. Older checkpoints outside the retention policy go in the same
/// transaction (see [`super::artifacts::keeps_checkpoint`]). Returns the
/// pointer's artifact id.
pub async fn record_epoch_with_checkpoint(
    pool: &PgPool,
    lease: &Lease,
    row: &EpochRecord,
    epochs_total: i32,
    files: &[impl super::artifacts::ArtifactRow],
) -> Result<i64, QueueError> {
    let run_id = run_of(lease)?;
    let mut tx = pool.begin().await?;
    fence(&mut tx, lease).await?;
    upsert_epoch(&mut tx, run_id, row).await?;
    let id = put_checkpoint(&mut tx, lease, run_id, row.epoch, epochs_total, files).await?;
    tx.commit().await?;
    Ok(id)
}

/// Upsert one sampled step row, fenced by `lease`.
pub async fn record_step(pool: &PgPool, lease: &Lease, row: &StepRecord) -> Result<(), QueueError> {
    let run_id = run_of(lease)?;
    let mut tx = pool.begin().await?;
    fence(&mut tx, lease).await?;
    sqlx::query(
        "insert into step_metric (run_id, epoch, step, progress, train_loss, lr, images_per_second)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (run_id, step) do update set
             epoch = excluded.epoch, progress = excluded.progress,
             train_loss = excluded.train_loss, lr = excluded.lr,
             images_per_second = excluded.images_per_second, recorded_at = now()",
    )
    .bind(run_id)
    .bind(row.epoch)
    .bind(row.step)
    .bind(row.progress)
    .bind(row.train_loss)
    .bind(row.lr)
    .bind(row.images_per_second)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
