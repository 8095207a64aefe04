//! API tokens. The secret (`mlb_` + 64 hex characters, 256 random bits) is
//! shown once when created; the database keeps only its sha256 and a short
//! prefix that lets people recognise it in lists. Revoked tokens stay listed
//! with their revocation time.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// Every secret starts with this, so leaked ones are easy to grep for.
pub const SECRET_PREFIX: &str = "mlb_";
/// Characters of the secret kept in clear to tell tokens apart.
const SHOWN_PREFIX_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name must be 1-100 characters, got {0}")]
    BadName(usize),
    #[error("an active token named `{0}` already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("no active token named or numbered `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A token as lists show it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub token_id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn info_from(r: &PgRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        token_id: r.try_get("token_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Hex sha256 of a secret, the form it is stored and looked up in.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret from the OS's random source.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// Create a token named `name`; returns the secret (to show once) and its row.
pub async fn create(pool: &PgPool, name: &str) -> Result<(String, TokenInfo), TokenError> {
    let chars = name.chars().count();
    if !(1..=100).contains(&chars) || name.trim().is_empty() {
        return Err(TokenError::BadName(chars));
    }
    let secret = new_secret();
    let prefix: String = secret.chars().take(SHOWN_PREFIX_LEN).collect();
    let row = sqlx::query(
        "insert into api_token (name, token_hash, prefix) values ($1, $2, $3)
         returning token_id, name, prefix, created_at, last_used_at, revoked_at",
    )
    .bind(name)
    .bind(hash_secret(&secret))
    .bind(&prefix)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TokenError::NameTaken(name.to_string())
        }
        _ => TokenError::Db(e),
    })?;
    tracing::info!(name, prefix, "token created");
    Ok((secret, info_from(&row)?))
}

/// Every token, newest first, revoked ones included.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, TokenError> {
    let rows = sqlx::query(
        "select token_id, name, prefix, created_at, last_used_at, revoked_at
         from api_token order by created_at desc, token_id desc",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(info_from).collect::<Result<_, _>>()?)
}

/// Revoke the active token with this name (or numeric id). Requests with it
/// are refused from the next one on.
pub async fn revoke(pool: &PgPool, name_or_id: &str) -> Result<TokenInfo, TokenError> {
    let id: Option<i64> = name_or_id.parse().ok();
    let row = sqlx::query(
        "update api_token set revoked_at = now()
         where revoked_at is null and (name = $1 or token_id = $2)
         returning token_id, name, prefix, created_at, last_used_at, revoked_at",
    )
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| TokenError::NotFound(name_or_id.to_string()))?;
    tracing::info!(name = name_or_id, "token revoked");
    Ok(info_from(&row)?)
}

/// The active token whose secret this is, or None (unknown, revoked,
/// malformed). Bumps `last_used_at` at most once a minute, so a busy client
/// does not turn every read into a write.
pub async fn verify(pool: &PgPool, secret: &str) -> Result<Option<TokenInfo>, sqlx::Error> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let row = sqlx::query(
        "select token_id, name, prefix, created_at, last_used_at, revoked_at,
                last_used_at is null or last_used_at < now() - interval '1 minute' as stale
         from api_token where token_hash = $1 and revoked_at is null",
    )
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let info = info_from(&row)?;
    let stale: bool = row.try_get("stale")?;
    if stale {
        sqlx::query("update api_token set last_used_at = now() where token_id = $1")
            .bind(info.token_id)
            .execute(pool)
            .await?;
    }
    Ok(Some(info))
}
