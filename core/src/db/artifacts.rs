//! Artifacts in PostgreSQL: reconstruction PNGs and checkpoints, with their
//! sha256, so a worker on any host can resume or finetune from them without a
//! shared file system.
//!
//! Checkpoint retention: a run keeps its newest checkpoint (the resume point)
//! plus, for good, every [`KEEP_EVERY`]-th epoch and its last epoch — the
//! epochs a finetune may name. Everything else is deleted when the next
//! checkpoint lands, so a 100-epoch run stores about 11 checkpoints, not 100.

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::queue::{Lease, QueueError, fence};

/// Checkpoints of epochs `e` with `(e + 1) % KEEP_EVERY == 0` are kept for good.
pub const KEEP_EVERY: i32 = 10;

/// Whether the checkpoint of 0-based `epoch` of a run of `epochs_total`
/// epochs is kept after later epochs land (and so may be named by a finetune).
pub fn keeps_checkpoint(epoch: i32, epochs_total: i32) -> bool {
    epoch >= 0 && ((epoch + 1) % KEEP_EVERY == 0 || epoch == epochs_total - 1)
}

/// An artifact to store.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    /// `reconstruction`, `checkpoint` or `log`.
    pub kind: &'a str,
    pub epoch: Option<i32>,
    /// Unique within the run; a second write under the same name replaces it.
    pub name: &'a str,
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

/// A stored artifact, read back.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub artifact_id: i64,
    pub run_id: Uuid,
    pub kind: String,
    pub epoch: Option<i32>,
    pub name: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) async fn upsert(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
    a: &NewArtifact<'_>,
) -> Result<i64, QueueError> {
    let size = i64::try_from(a.bytes.len()).unwrap_or(i64::MAX);
    let row = sqlx::query(
        "insert into artifact (run_id, kind, epoch, name, media_type, bytes, sha256, size_bytes)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (run_id, name) do update set
             kind = excluded.kind, epoch = excluded.epoch, media_type = excluded.media_type,
             bytes = excluded.bytes, sha256 = excluded.sha256, size_bytes = excluded.size_bytes,
             created_at = now()
         returning artifact_id",
    )
    .bind(run_id)
    .bind(a.kind)
    .bind(a.epoch)
    .bind(a.name)
    .bind(a.media_type)
    .bind(a.bytes)
    .bind(sha256_hex(a.bytes))
    .bind(size)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get("artifact_id")?)
}

/// Store one artifact of the leased job's run (a reconstruction PNG, a log),
/// fenced by the lease. Returns its id.
pub async fn put_artifact(
    pool: &PgPool,
    lease: &Lease,
    artifact: &NewArtifact<'_>,
) -> Result<i64, QueueError> {
    let run_id = lease.run_id.ok_or_else(|| {
        QueueError::Conflict(format!(
            "job {} has no run to store artifacts for",
            lease.job_id
        ))
    })?;
    let mut tx = pool.begin().await?;
    fence(&mut tx, lease).await?;
    let id = upsert(&mut tx, run_id, artifact).await?;
    tx.commit().await?;
    Ok(id)
}

/// Inside a fenced transaction: store the checkpoint files of `epoch` (the
/// first is the weights, which the job's pointer names), move the pointer,
/// and delete older checkpoints that the retention policy does not keep.
pub(crate) async fn put_checkpoint(
    tx: &mut sqlx::PgConnection,
    lease: &Lease,
    run_id: Uuid,
    epoch: i32,
    epochs_total: i32,
    files: &[NewArtifact<'_>],
) -> Result<i64, QueueError> {
    let mut pointer = None;
    for file in files {
        let id = upsert(tx, run_id, file).await?;
        pointer.get_or_insert(id);
    }
    let pointer = pointer
        .ok_or_else(|| QueueError::Conflict("a checkpoint needs at least one file".into()))?;
    sqlx::query(
        "update job set checkpoint_id = $3, checkpoint_epoch = $4
         where job_id = $1 and lease_token = $2",
    )
    .bind(lease.job_id)
    .bind(lease.lease_token)
    .bind(pointer)
    .bind(epoch)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "delete from artifact
         where run_id = $1 and kind = 'checkpoint' and epoch < $2
           and (epoch + 1) % $3 <> 0 and epoch <> $4 - 1",
    )
    .bind(run_id)
    .bind(epoch)
    .bind(KEEP_EVERY)
    .bind(epochs_total)
    .execute(&mut *tx)
    .await?;
    Ok(pointer)
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Artifact, QueueError> {
    Ok(Artifact {
        artifact_id: row.try_get("artifact_id")?,
        run_id: row.try_get("run_id")?,
        kind: row.try_get("kind")?,
        epoch: row.try_get("epoch")?,
        name: row.try_get("name")?,
        media_type: row.try_get("media_type")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
    })
}

const COLUMNS: &str = "artifact_id, run_id, kind, epoch, name, media_type, bytes, sha256";

/// Read one artifact, checking its bytes against the stored sha256 (a
/// corrupt checkpoint must not be trained from).
pub async fn get_artifact(pool: &PgPool, artifact_id: i64) -> Result<Artifact, QueueError> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from artifact where artifact_id = $1"
    ))
    .bind(artifact_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| QueueError::NotFound {
        what: "artifact",
        id: artifact_id.to_string(),
    })?;
    verified(from_row(&row)?)
}

fn verified(a: Artifact) -> Result<Artifact, QueueError> {
    let actual = sha256_hex(&a.bytes);
    if actual != a.sha256 {
        return Err(QueueError::Conflict(format!(
            "artifact {} ({}) is corrupt: sha256 {actual}, stored {}",
            a.artifact_id, a.name, a.sha256
        )));
    }
    Ok(a)
}

/// Every checkpoint file of `run_id` at `epoch`, by name (weights and state).
pub async fn checkpoint_files(
    pool: &PgPool,
    run_id: Uuid,
    epoch: i32,
) -> Result<Vec<Artifact>, QueueError> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from artifact
         where run_id = $1 and kind = 'checkpoint' and epoch = $2 order by name"
    ))
    .bind(run_id)
    .bind(epoch)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| from_row(r).and_then(verified))
        .collect()
}

/// Whether `run_id` has a checkpoint stored at `epoch`.
pub async fn has_checkpoint<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: Uuid,
    epoch: i32,
) -> Result<bool, QueueError> {
    let found: bool = sqlx::query_scalar(
        "select exists (select 1 from artifact where run_id = $1 and kind = 'checkpoint' and epoch = $2)",
    )
    .bind(run_id)
    .bind(epoch)
    .fetch_one(db)
    .await?;
    Ok(found)
}
