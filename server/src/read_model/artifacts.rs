//! Artifacts as lists and downloads see them: metadata without the bytes for
//! lists, the bytes for one download. `log.txt` is not stored; it is
//! generated from the epoch rows (see [`super::metrics::log_txt`]) and listed
//! as a synthetic entry when a run has epochs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::ReadError;

/// The name under which the generated MAE log is served.
pub const LOG_NAME: &str = "log.txt";

/// One artifact without its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// One artifact with its bytes.
#[derive(Debug, Clone)]
pub struct ArtifactFile {
    pub info: ArtifactInfo,
    pub bytes: Vec<u8>,
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

fn info_from(r: &PgRow) -> Result<ArtifactInfo, sqlx::Error> {
    Ok(ArtifactInfo {
        artifact_id: Some(r.try_get("artifact_id")?),
        kind: r.try_get("kind")?,
        epoch: r.try_get("epoch")?,
        name: r.try_get("name")?,
        media_type: r.try_get("media_type")?,
        size_bytes: Some(r.try_get("size_bytes")?),
        sha256: Some(r.try_get("sha256")?),
        created_at: Some(r.try_get("created_at")?),
    })
}

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
    let rows = sqlx::query(
        "select artifact_id, kind, epoch, name, media_type, size_bytes, sha256, created_at
         from artifact where run_id = $1 and ($2::text is null or kind = $2)
         order by kind, epoch nulls first, name",
    )
    .bind(run_id)
    .bind(kind)
    .fetch_all(pool)
    .await?;
    let mut out = rows.iter().map(info_from).collect::<Result<Vec<_>, _>>()?;
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
    let row = sqlx::query(
        "select artifact_id, kind, epoch, name, media_type, size_bytes, sha256, created_at, bytes
         from artifact where run_id = $1 and name = $2",
    )
    .bind(run_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    if let Some(r) = row {
        return Ok(Some(ArtifactFile {
            info: info_from(&r)?,
            bytes: r.try_get("bytes")?,
        }));
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
        bytes,
    }))
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
