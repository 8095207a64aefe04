//! Artifacts as lists and downloads see them: metadata without the bytes for
//! lists, where the bytes are for one download (`crate::http::artifact_body`
//! streams them). `log.txt` is not stored; it is
//! generated from the epoch rows (see [`super::metrics::log_txt`]) and listed
//! as a synthetic entry when a run has epochs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::ReadError;

/// The name under which the generated MAE log is served.
pub const LOG_NAME: &str = "log.txt";

/// One artifact without its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ArtifactInfo {
    /// None for the generated `log.txt`.
    pub artifact_id: Option<i64>,
    /// `reconstruction`, `checkpoint` or `log`.
    pub kind: String,
    pub epoch: Option<i32>,
    pub name: String,
    pub media_type: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// One artifact and where its bytes are: inline (a row from before the
/// artifact store, or the generated `log.txt`) or the key of its object.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactFile {
    #[sqlx(flatten)]
    pub info: ArtifactInfo,
    pub bytes: Option<Vec<u8>>,
    pub store_key: Option<String>,
}

/// Whether `name` is a name the schema allows for an artifact (the `artifact.name`
/// check): anything else (`..`, slashes, NULs, 200 characters) is refused
/// before it reaches a query.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 128
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The metadata columns of an artifact, for [`ArtifactInfo`].
const INFO_COLUMNS: &str =
    "artifact_id, kind, epoch, name, media_type, size_bytes, sha256, created_at";

/// The stored artifacts of a run (kind, then epoch, then name), optionally of
/// one kind, plus the generated `log.txt` when the run has epoch rows.
pub async fn list(
    pool: &PgPool,
    run_id: Uuid,
    kind: Option<&str>,
) -> Result<Vec<ArtifactInfo>, ReadError> {
    if let Some(k) = kind
        && !["reconstruction", "checkpoint", "log"].contains(&k)
    {
        return Err(ReadError::invalid(
            "kind",
            format!("`{k}` is not one of reconstruction, checkpoint, log"),
        ));
    }
    let mut out = sqlx::query_as::<_, ArtifactInfo>(&format!(
        "select {INFO_COLUMNS} from artifact where run_id = $1 and ($2::text is null or kind = $2)
         order by kind, epoch nulls first, name"
    ))
    .bind(run_id)
    .bind(kind)
    .fetch_all(pool)
    .await?;
    let has_log = out.iter().any(|a| a.name == LOG_NAME);
    if !has_log && kind.is_none_or(|k| k == "log") && has_epochs(pool, run_id).await? {
        out.push(generated_log_info(None));
    }
    Ok(out)
}

async fn has_epochs(pool: &PgPool, run_id: Uuid) -> Result<bool, ReadError> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from epoch_metric where run_id = $1)")
            .bind(run_id)
            .fetch_one(pool)
            .await?,
    )
}

fn generated_log_info(size: Option<i64>) -> ArtifactInfo {
    ArtifactInfo {
        artifact_id: None,
        kind: "log".into(),
        epoch: None,
        name: LOG_NAME.into(),
        media_type: "text/plain; charset=utf-8".into(),
        size_bytes: size,
        sha256: None,
        created_at: None,
    }
}

/// One artifact of a run by name, with its bytes; `log.txt` is generated from
/// the epoch rows unless one was stored. None when there is no such artifact.
pub async fn fetch(
    pool: &PgPool,
    run_id: Uuid,
    name: &str,
) -> Result<Option<ArtifactFile>, ReadError> {
    if !valid_name(name) {
        return Err(ReadError::invalid(
            "name",
            "an artifact name is 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        ));
    }
    let stored = sqlx::query_as::<_, ArtifactFile>(&format!(
        "select {INFO_COLUMNS}, bytes, store_key from artifact where run_id = $1 and name = $2"
    ))
    .bind(run_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    if stored.is_some() {
        return Ok(stored);
    }
    if name != LOG_NAME {
        return Ok(None);
    }
    let epochs = super::metrics::epochs(pool, run_id, None).await?;
    if epochs.is_empty() {
        return Ok(None);
    }
    let bytes = super::metrics::log_txt(&epochs).into_bytes();
    Ok(Some(ArtifactFile {
        info: generated_log_info(i64::try_from(bytes.len()).ok()),
        bytes: Some(bytes),
        store_key: None,
    }))
}

/// Reconstruction images of a run with an id above `after` (none: all), in
/// id order: the run and compare pages show them, the live streams resume
/// after the last id they sent.
pub async fn reconstructions(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i64>,
) -> Result<Vec<ArtifactInfo>, sqlx::Error> {
    sqlx::query_as::<_, ArtifactInfo>(&format!(
        "select {INFO_COLUMNS} from artifact
         where run_id = $1 and kind = 'reconstruction' and ($2::bigint is null or artifact_id > $2)
         order by artifact_id"
    ))
    .bind(run_id)
    .bind(after)
    .fetch_all(pool)
    .await
}

/// A stored reconstruction or log of a run by id, with its bytes (what the
/// run page links to); checkpoints are only downloaded through the API.
pub async fn viewable(
    pool: &PgPool,
    run_id: Uuid,
    artifact_id: i64,
) -> Result<Option<ArtifactFile>, sqlx::Error> {
    sqlx::query_as::<_, ArtifactFile>(&format!(
        "select {INFO_COLUMNS}, bytes, store_key from artifact
         where run_id = $1 and artifact_id = $2 and kind in ('reconstruction', 'log')"
    ))
    .bind(run_id)
    .bind(artifact_id)
    .fetch_optional(pool)
    .await
}

/// The newest log a run stored (the trainer's own `log.txt`), with its bytes.
pub async fn stored_log(pool: &PgPool, run_id: Uuid) -> Result<Option<ArtifactFile>, sqlx::Error> {
    sqlx::query_as::<_, ArtifactFile>(&format!(
        "select {INFO_COLUMNS}, bytes, store_key from artifact
         where run_id = $1 and kind = 'log' order by created_at desc limit 1"
    ))
    .bind(run_id)
    .fetch_optional(pool)
    .await
}

/// Whether a run stored a log.
pub async fn has_stored_log(pool: &PgPool, run_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from artifact where run_id = $1 and kind = 'log')")
        .bind(run_id)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_the_schema_check() {
        for ok in ["log.txt", "recon-0003.png", "ckpt_9.safetensors", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../etc/passwd",
            ".hidden",
            "a/b",
            "a\\b",
            "a\0b",
            "é.png",
            &"x".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
