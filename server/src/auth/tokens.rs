//! API tokens. The secret (`mlb_` + 64 hex characters, 256 random bits) is
//! shown once when created; the database keeps only its sha256 and a short
//! prefix that lets people recognise it in lists. Each token has a [`Scope`]
//! and may expire. Revoked tokens stay listed with their revocation time.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::expiry::{self, ExpiryError};
use super::scope::{Scope, UnknownScope};

/// Every secret starts with this, so leaked ones are easy to grep for.
pub const SECRET_PREFIX: &str = "mlb_";
/// Characters of the secret kept in clear to tell tokens apart.
const SHOWN_PREFIX_LEN: usize = 12;
/// The columns [`TokenInfo`] is read from.
const COLUMNS: &str =
    "token_id, name, scope, prefix, created_at, expires_at, last_used_at, revoked_at";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("name: a token name must be 1-100 characters, got {0}")]
    BadName(usize),
    #[error(
        "name: an active token named `{0}` already exists; revoke it first or pick another name"
    )]
    NameTaken(String),
    #[error("expires: {0}")]
    Expiry(#[from] ExpiryError),
    #[error("no active token named or numbered `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A token as lists show it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub token_id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub scope: Scope,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// None: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<String> for Scope {
    type Error = UnknownScope;

    fn try_from(s: String) -> Result<Self, UnknownScope> {
        s.parse()
    }
}

/// How times appear in refusals and lists.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Why a token cannot be used now. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token is unknown; check that it was copied whole")]
    Unknown,
    #[error("the token `{name}` was revoked at {}", fmt_time(*.at))]
    Revoked { name: String, at: DateTime<Utc> },
    #[error(
        "the token `{name}` expired at {}; create a new one with `maelab token create`",
        fmt_time(*.at)
    )]
    Expired { name: String, at: DateTime<Utc> },
}

impl TokenInfo {
    /// Whether the token may be used at `now`.
    pub fn usable_at(&self, now: DateTime<Utc>) -> Result<(), Refused> {
        if let Some(at) = self.revoked_at {
            return Err(Refused::Revoked {
                name: self.name.clone(),
                at,
            });
        }
        match self.expires_at {
            Some(at) if at <= now => Err(Refused::Expired {
                name: self.name.clone(),
                at,
            }),
            _ => Ok(()),
        }
    }
}

/// Why [`verify`] gave no token.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Hex sha256 of a secret, the form it is stored and looked up in.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `prefix` and 256 bits from the OS's random source, in hex.
pub(super) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What a new token is.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub scope: Scope,
    /// None: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Create a `write` token named `name` that never expires (what every token
/// was before scopes); returns the secret (to show once) and its row.
pub async fn create(pool: &PgPool, name: &str) -> Result<(String, TokenInfo), TokenError> {
    create_with(
        pool,
        &NewToken {
            name,
            scope: Scope::Write,
            expires_at: None,
        },
    )
    .await
}

/// Create a token; returns the secret (to show once) and its row. An expiry
/// that is not in the future is refused.
pub async fn create_with(
    pool: &PgPool,
    new: &NewToken<'_>,
) -> Result<(String, TokenInfo), TokenError> {
    let name = new.name;
    let chars = name.chars().count();
    if !(1..=100).contains(&chars) || name.trim().is_empty() {
        return Err(TokenError::BadName(chars));
    }
    if let Some(at) = new.expires_at {
        expiry::check_future(at, Utc::now())?;
    }
    let secret = random_secret(SECRET_PREFIX);
    let prefix: String = secret.chars().take(SHOWN_PREFIX_LEN).collect();
    let info = sqlx::query_as::<_, TokenInfo>(&format!(
        "insert into api_token (name, token_hash, prefix, scope, expires_at)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(name)
    .bind(hash_secret(&secret))
    .bind(&prefix)
    .bind(new.scope.as_str())
    .bind(new.expires_at)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TokenError::NameTaken(name.to_string())
        }
        _ => TokenError::Db(e),
    })?;
    tracing::info!(name, prefix, scope = %new.scope, expires_at = ?new.expires_at, "token created");
    Ok((secret, info))
}

/// Every token, newest first, revoked ones included.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, TokenError> {
    Ok(sqlx::query_as::<_, TokenInfo>(&format!(
        "select {COLUMNS} from api_token order by created_at desc, token_id desc"
    ))
    .fetch_all(pool)
    .await?)
}

/// Revoke the active token with this name (or numeric id), and end its
/// browser sessions. Requests with it are refused from the next one on.
pub async fn revoke(pool: &PgPool, name_or_id: &str) -> Result<TokenInfo, TokenError> {
    let id: Option<i64> = name_or_id.parse().ok();
    let info = sqlx::query_as::<_, TokenInfo>(&format!(
        "with revoked as (
             update api_token set revoked_at = now()
             where revoked_at is null and (name = $1 or token_id = $2)
             returning {COLUMNS}
         ), ended as (
             update browser_session s set revoked_at = now()
             from revoked r where s.token_id = r.token_id and s.revoked_at is null
         )
         select {COLUMNS} from revoked"
    ))
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| TokenError::NotFound(name_or_id.to_string()))?;
    tracing::info!(name = %info.name, token_id = info.token_id, "token revoked");
    Ok(info)
}

/// The token whose secret this is, if it may be used now; else why not
/// (unknown or malformed, revoked, expired).
pub async fn verify(pool: &PgPool, secret: &str) -> Result<TokenInfo, VerifyError> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 200 {
        return Err(Refused::Unknown.into());
    }
    let info = sqlx::query_as::<_, TokenInfo>(&format!(
        "select {COLUMNS} from api_token where token_hash = $1"
    ))
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?
    .ok_or(Refused::Unknown)?;
    info.usable_at(Utc::now())?;
    touch(pool, &info).await?;
    Ok(info)
}

/// Bump `last_used_at` at most once a minute, so a busy client does not turn
/// every read into a write.
pub async fn touch(pool: &PgPool, info: &TokenInfo) -> Result<(), sqlx::Error> {
    let fresh = info
        .last_used_at
        .is_some_and(|t| Utc::now() - t < chrono::TimeDelta::minutes(1));
    if !fresh {
        sqlx::query("update api_token set last_used_at = now() where token_id = $1")
            .bind(info.token_id)
            .execute(pool)
            .await?;
    }
    Ok(())
}
