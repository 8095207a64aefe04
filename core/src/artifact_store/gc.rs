//! Deleting objects whose rows are gone. A row deleted (retention, a run
//! deleted) or replaced (a second upload under the same name) records its
//! key in `artifact_orphan` in the same transaction (a trigger, migration
//! 0009); after the commit the writer, the server's sweeper or
//! `maelab artifacts gc` deletes the object and then the record. A crash in
//! between leaves the record, never an object nobody knows of.

use sqlx::PgPool;

use super::{ArtifactStore, StoreError};

/// Keys handled per statement.
const BATCH: i64 = 100;

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GcError {
    /// Whether a retry may cure it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => crate::db::queue::is_transient_sqlx(e),
            Self::Store(e) => e.is_transient(),
        }
    }
}

/// Delete every orphaned object (and its record); returns how many. Safe to
/// run from several processes at once: a key deleted twice is fine.
pub async fn sweep(pool: &PgPool, store: &ArtifactStore) -> Result<u64, GcError> {
    let mut done = 0u64;
    loop {
        let keys = crate::db::artifacts::orphan_keys(pool, BATCH).await?;
        if keys.is_empty() {
            return Ok(done);
        }
        for key in &keys {
            match store.delete(key).await {
                Ok(()) => {}
                // A record whose key could never be an object: drop it.
                Err(StoreError::BadKey { .. }) => {
                    tracing::warn!(key, "orphan record with an invalid key dropped");
                }
                Err(e) => return Err(e.into()),
            }
        }
        crate::db::artifacts::forget_orphans(pool, &keys).await?;
        done += keys.len() as u64;
        if (keys.len() as i64) < BATCH {
            return Ok(done);
        }
    }
}

/// [`sweep`] after a commit that may have orphaned objects: failures are
/// logged, not returned (the records stay for the next sweep).
pub async fn sweep_quietly(pool: &PgPool, store: &ArtifactStore) {
    if let Err(e) = sweep(pool, store).await {
        tracing::warn!(url = store.url(), error = %e, "deleting replaced artifacts failed; will retry");
    }
}
