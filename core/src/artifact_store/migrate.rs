//! Moving artifacts written before the store (bytes inline, `bytea`) into
//! it: `maelab artifacts migrate`. Row by row, in id order: the key is
//! recorded as an orphan first, the bytes uploaded and read back (their
//! sha256 checked against the row's), then one transaction points the row at
//! the object (`bytes` null) and drops the orphan record. A crash anywhere
//! leaves each row either moved or still inline, and at worst an orphan
//! record whose object the next sweep deletes. Running it again moves only
//! what is left.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::gc::GcError;
use super::{ArtifactStore, StoreError, key};

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Rows now in the store.
    pub moved: u64,
    /// Rows whose own bytes do not match their sha256: left inline, reported.
    pub corrupt: u64,
    /// Rows replaced or deleted while their bytes were uploading (their
    /// object was dropped again).
    pub raced: u64,
    /// Rows still inline afterwards.
    pub left: u64,
}

/// Move up to `limit` inline rows (None: all), `batch` ids per query.
pub async fn move_inline(
    pool: &PgPool,
    store: &ArtifactStore,
    batch: i64,
    limit: Option<u64>,
) -> Result<Moved, GcError> {
    let mut done = Moved::default();
    let mut after = 0i64;
    'outer: loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "select artifact_id from artifact where bytes is not null and artifact_id > $1
             order by artifact_id limit $2",
        )
        .bind(after)
        .bind(batch.max(1))
        .fetch_all(pool)
        .await?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            after = id;
            if limit.is_some_and(|l| done.moved >= l) {
                break 'outer;
            }
            match move_one(pool, store, id).await? {
                Outcome::Moved => done.moved += 1,
                Outcome::Corrupt => done.corrupt += 1,
                Outcome::Raced => done.raced += 1,
            }
        }
    }
    done.left =
        sqlx::query_scalar::<_, i64>("select count(*) from artifact where bytes is not null")
            .fetch_one(pool)
            .await?
            .unsigned_abs();
    Ok(done)
}

enum Outcome {
    Moved,
    Corrupt,
    Raced,
}

async fn move_one(pool: &PgPool, store: &ArtifactStore, id: i64) -> Result<Outcome, GcError> {
    let Some(row) = sqlx::query(
        "select run_id, name, sha256, bytes from artifact where artifact_id = $1 and bytes is not null",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(Outcome::Raced);
    };
    let run_id: Uuid = row.try_get("run_id")?;
    let name: String = row.try_get("name")?;
    let sha256: String = row.try_get("sha256")?;
    let bytes: Vec<u8> = row.try_get("bytes")?;
    if crate::db::artifacts::sha256_hex(&bytes) != sha256 {
        tracing::error!(
            artifact_id = id,
            name,
            "inline artifact does not match its sha256; left in place"
        );
        return Ok(Outcome::Corrupt);
    }
    let key = key::new_key(run_id, &name)?;
    // Recorded first, due in an hour: if we die after the upload, a later
    // sweep deletes the object; a sweep meanwhile leaves it alone.
    sqlx::query(
        "insert into artifact_orphan (store_key, delete_after)
         values ($1, now() + interval '1 hour') on conflict do nothing",
    )
    .bind(&key)
    .execute(pool)
    .await?;
    store.put_bytes(&key, bytes).await?;
    match store.verify(&key, &sha256).await {
        Ok(_) => {}
        Err(e @ StoreError::Corrupt { .. }) => {
            store.delete(&key).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    }
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "update artifact set store_key = $2, bytes = null
         where artifact_id = $1 and bytes is not null and sha256 = $3",
    )
    .bind(id)
    .bind(&key)
    .bind(&sha256)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        sqlx::query("delete from artifact_orphan where store_key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if updated == 1 {
        Ok(Outcome::Moved)
    } else {
        // Replaced meanwhile: delete the upload now (its record goes with it).
        store.delete(&key).await?;
        crate::db::artifacts::forget_orphans(pool, std::slice::from_ref(&key)).await?;
        Ok(Outcome::Raced)
    }
}
