//! Artifact metadata in PostgreSQL: reconstruction PNGs and checkpoints, with
//! their sha256, size and the key of their bytes in the artifact store
//! ([`crate::artifact_store`]), so a worker on any host can resume or
//! finetune from them without a shared file system. Rows written before
//! migration 0009 hold their bytes inline (`bytea`) and are read in place
//! until `maelab artifacts migrate` moves them.
//!
//! The object is written first, under a fresh key; the row naming it is
//! written after, fenced, so a row never names an object that is not in the
//! store. Rows deleted or replaced record their key in `artifact_orphan` (a
//! trigger) and the object is deleted after the commit
//! ([`crate::artifact_store::gc`]).
//!
//! Checkpoint retention: a run keeps its newest checkpoint (the resume point)
//! plus, for good, every `checkpoint_keep_every`-th epoch of its config
//! (default [`KEEP_EVERY`]) and its last epoch: the epochs a finetune may
//! name. Everything else is deleted when the next checkpoint lands, so a
//! 100-epoch run stores about 11 checkpoints, not 100.

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::queue::{Lease, QueueError, fence};
use crate::artifact_store::StoredObject;

/// Default of the run config's `checkpoint_keep_every`: checkpoints of
/// epochs `e` with `(e + 1) % KEEP_EVERY == 0` are kept for good.
pub const KEEP_EVERY: i32 = 10;

/// Whether the checkpoint of 0-based `epoch` of a run of `epochs_total`
/// epochs keeping every `keep_every`-th is kept after later epochs land (and
/// so may be named by a finetune).
pub fn keeps_checkpoint(epoch: i32, epochs_total: i32, keep_every: i32) -> bool {
    epoch >= 0 && ((epoch + 1) % keep_every.max(1) == 0 || epoch == epochs_total - 1)
}

/// An artifact whose bytes are in the store (the object written first).
#[derive(Debug, Clone)]
pub struct NewStoredArtifact<'a> {
    /// `reconstruction`, `checkpoint`, `log` or `file`.
    pub kind: &'a str,
    pub epoch: Option<i32>,
    /// Unique within the run; a second write under the same name replaces it.
    pub name: &'a str,
    pub media_type: &'a str,
    pub object: &'a StoredObject,
}

/// An artifact with its bytes inline: the layout before the store
/// (migration 0009). Only tests and fixtures write it (to stand for rows an
/// older maelab left); the worker and the API write [`NewStoredArtifact`].
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub kind: &'a str,
    pub epoch: Option<i32>,
    pub name: &'a str,
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

/// The columns of one artifact row to write.
pub struct RowValues<'a> {
    kind: &'a str,
    epoch: Option<i32>,
    name: &'a str,
    media_type: &'a str,
    bytes: Option<&'a [u8]>,
    store_key: Option<&'a str>,
    sha256: String,
    size: i64,
}

/// What can be written as an artifact row.
pub trait ArtifactRow {
    fn row(&self) -> RowValues<'_>;
}

impl ArtifactRow for NewStoredArtifact<'_> {
    fn row(&self) -> RowValues<'_> {
        RowValues {
            kind: self.kind,
            epoch: self.epoch,
            name: self.name,
            media_type: self.media_type,
            bytes: None,
            store_key: Some(&self.object.key),
            sha256: self.object.sha256.clone(),
            size: i64::try_from(self.object.size).unwrap_or(i64::MAX),
        }
    }
}

impl ArtifactRow for NewArtifact<'_> {
    fn row(&self) -> RowValues<'_> {
        RowValues {
            kind: self.kind,
            epoch: self.epoch,
            name: self.name,
            media_type: self.media_type,
            bytes: Some(self.bytes),
            store_key: None,
            sha256: sha256_hex(self.bytes),
            size: i64::try_from(self.bytes.len()).unwrap_or(i64::MAX),
        }
    }
}

/// Where an artifact's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactBody {
    /// A row from before the store, read in place.
    Inline(Vec<u8>),
    /// An object in the artifact store.
    Stored { key: String },
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
    pub body: ArtifactBody,
    pub size_bytes: i64,
    pub sha256: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) async fn upsert(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
    a: &impl ArtifactRow,
) -> Result<i64, QueueError> {
    let a = a.row();
    let row = sqlx::query(
        "insert into artifact (run_id, kind, epoch, name, media_type, bytes, store_key, sha256, size_bytes)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (run_id, name) do update set
             kind = excluded.kind, epoch = excluded.epoch, media_type = excluded.media_type,
             bytes = excluded.bytes, store_key = excluded.store_key,
             sha256 = excluded.sha256, size_bytes = excluded.size_bytes, created_at = now()
         returning artifact_id",
    )
    .bind(run_id)
    .bind(a.kind)
    .bind(a.epoch)
    .bind(a.name)
    .bind(a.media_type)
    .bind(a.bytes)
    .bind(a.store_key)
    .bind(&a.sha256)
    .bind(a.size)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get("artifact_id")?)
}

/// Store one artifact of the leased job's run (a reconstruction PNG, a log),
/// fenced by the lease. Returns its id.
pub async fn put_artifact(
    pool: &PgPool,
    lease: &Lease,
    artifact: &impl ArtifactRow,
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
/// and delete older checkpoints that the retention policy of the run's config
/// does not keep (their objects are recorded as orphans, deleted after the
/// commit).
pub(crate) async fn put_checkpoint(
    tx: &mut sqlx::PgConnection,
    lease: &Lease,
    run_id: Uuid,
    epoch: i32,
    epochs_total: i32,
    files: &[impl ArtifactRow],
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
           and (epoch + 1) % greatest(1, coalesce(
                   (select (config->>'checkpoint_keep_every')::int from run where run_id = $1),
                   $3)) <> 0
           and epoch <> $4 - 1",
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
    let bytes: Option<Vec<u8>> = row.try_get("bytes")?;
    let key: Option<String> = row.try_get("store_key")?;
    let body = match (bytes, key) {
        (_, Some(key)) => ArtifactBody::Stored { key },
        (Some(bytes), None) => ArtifactBody::Inline(bytes),
        (None, None) => {
            return Err(QueueError::Conflict(
                "an artifact row without bytes or a store key".into(),
            ));
        }
    };
    Ok(Artifact {
        artifact_id: row.try_get("artifact_id")?,
        run_id: row.try_get("run_id")?,
        kind: row.try_get("kind")?,
        epoch: row.try_get("epoch")?,
        name: row.try_get("name")?,
        media_type: row.try_get("media_type")?,
        body,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
    })
}

const COLUMNS: &str =
    "artifact_id, run_id, kind, epoch, name, media_type, bytes, store_key, size_bytes, sha256";

/// Read one artifact; inline bytes are checked against the stored sha256
/// here, stored objects when they are downloaded (a corrupt checkpoint must
/// not be trained from).
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
    let ArtifactBody::Inline(bytes) = &a.body else {
        return Ok(a);
    };
    let actual = sha256_hex(bytes);
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

/// Up to `limit` keys of objects whose rows are gone and that are due for
/// deletion (oldest first).
pub async fn orphan_keys(pool: &PgPool, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select store_key from artifact_orphan where delete_after <= now()
         order by delete_after, store_key limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Drop the records of orphaned objects that were deleted from the store.
pub async fn forget_orphans(pool: &PgPool, keys: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("delete from artifact_orphan where store_key = any($1)")
        .bind(keys)
        .execute(pool)
        .await?;
    Ok(())
}

/// The store URL the server published at its start, if any (workers on
/// the same host use it when given none).
pub async fn published_store_url(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select url from artifact_store_setting")
        .fetch_optional(pool)
        .await
}

/// Publish the server's store URL (see [`published_store_url`]).
pub async fn publish_store_url(pool: &PgPool, url: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into artifact_store_setting (url) values ($1)
         on conflict (singleton) do update set url = excluded.url, updated_at = now()",
    )
    .bind(url)
    .execute(pool)
    .await?;
    Ok(())
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
