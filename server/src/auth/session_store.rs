//! Browser sessions, kept server-side (`browser_session`): the cookie holds a
//! random session secret, never the token's, and the table only its sha256.
//! A session ends when it expires, when the browser signs out, or when its
//! token is revoked or expires; a cookie of an ended session signs the
//! browser out.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{FromRow, PgPool, Row};

use super::tokens::{self, Refused, TokenInfo, fmt_time, hash_secret};

/// Every session secret starts with this (tokens start with `mlb_`).
const SECRET_PREFIX: &str = "mls_";
/// The longest a browser stays signed in; a token that expires sooner ends
/// its sessions sooner.
pub const MAX_AGE: TimeDelta = TimeDelta::days(7);

/// A new session: the cookie's value and when it ends.
#[derive(Debug, Clone)]
pub struct Started {
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a session cookie no longer signs anyone in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    #[error("this sign-in is not known to the server (signed out, or from before an upgrade)")]
    Unknown,
    #[error("you signed out at {}", fmt_time(*.0))]
    SignedOut(DateTime<Utc>),
    #[error("this sign-in expired at {}", fmt_time(*.0))]
    Expired(DateTime<Utc>),
    #[error(transparent)]
    Token(Refused),
}

/// Why [`find`] gave no token.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Ended(#[from] Ended),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Start a session for `token`; it ends after [`MAX_AGE`] or when the token
/// expires, whichever comes first.
pub async fn start(pool: &PgPool, token: &TokenInfo) -> Result<Started, sqlx::Error> {
    let secret = tokens::random_secret(SECRET_PREFIX);
    let longest = Utc::now() + MAX_AGE;
    let expires_at = token.expires_at.map_or(longest, |t| t.min(longest));
    sqlx::query(
        "insert into browser_session (session_hash, token_id, expires_at) values ($1, $2, $3)",
    )
    .bind(hash_secret(&secret))
    .bind(token.token_id)
    .bind(expires_at)
    .execute(pool)
    .await?;
    // Sessions long over are of no use even to an audit; sign-ins are rare
    // enough to sweep them here.
    sqlx::query("delete from browser_session where expires_at < now() - interval '30 days'")
        .execute(pool)
        .await?;
    Ok(Started { secret, expires_at })
}

/// The token behind a live session cookie, or why the session has ended.
pub async fn find(pool: &PgPool, secret: &str) -> Result<TokenInfo, SessionError> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 200 {
        return Err(Ended::Unknown.into());
    }
    let row = sqlx::query(
        "select s.expires_at as session_expires_at, s.revoked_at as session_revoked_at,
                t.token_id, t.name, t.scope, t.prefix, t.created_at, t.expires_at,
                t.last_used_at, t.revoked_at
         from browser_session s join api_token t using (token_id)
         where s.session_hash = $1",
    )
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?
    .ok_or(Ended::Unknown)?;
    let token = TokenInfo::from_row(&row)?;
    let expires_at: DateTime<Utc> = row.try_get("session_expires_at")?;
    let revoked_at: Option<DateTime<Utc>> = row.try_get("session_revoked_at")?;
    let now = Utc::now();
    // The token's own state first: "revoked" says more than "signed out".
    token.usable_at(now).map_err(Ended::Token)?;
    if let Some(at) = revoked_at {
        return Err(Ended::SignedOut(at).into());
    }
    if expires_at <= now {
        return Err(Ended::Expired(expires_at).into());
    }
    tokens::touch(pool, &token).await?;
    Ok(token)
}

/// End the session of this cookie (sign-out). Unknown or ended: nothing to do.
pub async fn end(pool: &PgPool, secret: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update browser_session set revoked_at = now()
         where session_hash = $1 and revoked_at is null",
    )
    .bind(hash_secret(secret))
    .execute(pool)
    .await?;
    Ok(())
}
