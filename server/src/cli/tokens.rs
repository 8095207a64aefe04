//! `maelab token create|list|revoke`: the operator's commands. They talk to
//! the database directly (the same `DATABASE_URL` as the server, or the
//! embedded cluster in the data folder), since creating the first token
//! cannot need a token. `create` takes a scope (`--scope`, default `write`)
//! and an optional expiry (`--expires 30d`); `list` shows both and last use.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use maelab_core::db;

use super::EXIT_OK;
use crate::auth::expiry::Expires;
use crate::auth::scope::Scope;
use crate::auth::tokens::{self, NewToken, TokenInfo};
use crate::embedded_pg::EmbeddedPostgres;

#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL URL. Unset: the embedded cluster in the data folder.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The server's data folder (for the embedded cluster).
    #[arg(long, env = "MAELAB_DATA_DIR", default_value = ".maelab")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once, on standard output.
    Create {
        #[arg(long)]
        name: String,
        /// What it may do: read; submit (create runs and studies, change only
        /// its own); write (everything a user does); admin (also tokens and
        /// workers).
        #[arg(long, default_value = "write", value_parser = parse_scope)]
        scope: Scope,
        /// When it stops working: a lifetime (12h, 30d, 8w) or a date
        /// (2027-01-31, RFC 3339). Default: never.
        #[arg(long, value_parser = parse_expires)]
        expires: Option<Expires>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke the active token with this name (or id).
    Revoke {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Run `f` on the database `args` names (the embedded cluster when no URL is
/// given), then close the pool and stop the embedded cluster whatever `f`
/// returned: what every operator command on the database does.
pub(crate) async fn with_database(
    args: &DbArgs,
    f: impl AsyncFnOnce(&sqlx::PgPool) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let (pool, embedded) = connect(args).await?;
    let result = f(&pool).await;
    pool.close().await;
    if let Some(pg) = embedded {
        pg.stop()?;
    }
    result
}

async fn connect(args: &DbArgs) -> anyhow::Result<(sqlx::PgPool, Option<EmbeddedPostgres>)> {
    let (url, embedded) = match &args.database_url {
        Some(u) => (u.clone(), None),
        None => {
            let pg = EmbeddedPostgres::start(&args.data_dir)
                .await
                .context("starting the embedded PostgreSQL (set DATABASE_URL to use another)")?;
            (pg.url(), Some(pg))
        }
    };
    let pool = db::connect(&url, 2).await?;
    db::migrate(&pool).await?;
    Ok((pool, embedded))
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
        .map_err(|e: crate::auth::scope::UnknownScope| e.to_string())
}

fn parse_expires(s: &str) -> Result<Expires, String> {
    s.parse()
        .map_err(|e: crate::auth::expiry::ExpiryError| e.to_string())
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// The EXPIRES column: when, `never`, or when with `(expired)`.
fn fmt_expiry(t: &TokenInfo, now: chrono::DateTime<chrono::Utc>) -> String {
    match t.expires_at {
        None => "never".into(),
        Some(at) if at <= now => format!("{} (expired)", fmt_time(Some(at))),
        Some(at) => fmt_time(Some(at)),
    }
}

pub async fn run(command: TokenCommand) -> anyhow::Result<u8> {
    let db_args = match &command {
        TokenCommand::Create { db, .. }
        | TokenCommand::List { db }
        | TokenCommand::Revoke { db, .. } => db,
    };
    // A past expiry is refused before any database is started.
    let expires_at = match &command {
        TokenCommand::Create {
            expires: Some(e), ..
        } => Some(
            e.at(chrono::Utc::now())
                .map_err(|e| anyhow::anyhow!("--expires: {e}"))?,
        ),
        _ => None,
    };
    with_database(db_args, async |pool| {
        execute(pool, &command, expires_at).await
    })
    .await
}

async fn execute(
    pool: &sqlx::PgPool,
    command: &TokenCommand,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<u8> {
    match command {
        TokenCommand::Create { name, scope, .. } => {
            let new = NewToken {
                name,
                scope: *scope,
                expires_at,
            };
            let (secret, info) = tokens::create_with(pool, &new).await?;
            println!("{secret}");
            let until = match info.expires_at {
                Some(at) => format!("expires {} UTC", fmt_time(Some(at))),
                None => "never expires (give --expires 30d to limit it)".into(),
            };
            eprintln!(
                "created token `{}` ({}), scope {}, {until}; \
                 this is the only time its secret is shown",
                info.name, info.prefix, info.scope
            );
        }
        TokenCommand::List { .. } => {
            let now = chrono::Utc::now();
            println!(
                "{:>4}  {:<24}  {:<6}  {:<14}  {:<19}  {:<29}  {:<19}  REVOKED",
                "ID", "NAME", "SCOPE", "PREFIX", "CREATED", "EXPIRES", "LAST USED"
            );
            for t in tokens::list(pool).await? {
                println!(
                    "{:>4}  {:<24}  {:<6}  {:<14}  {:<19}  {:<29}  {:<19}  {}",
                    t.token_id,
                    t.name,
                    t.scope,
                    t.prefix,
                    fmt_time(Some(t.created_at)),
                    fmt_expiry(&t, now),
                    fmt_time(t.last_used_at),
                    fmt_time(t.revoked_at)
                );
            }
        }
        TokenCommand::Revoke { name, .. } => {
            let t = tokens::revoke(pool, name).await?;
            eprintln!("revoked token `{}` ({})", t.name, t.prefix);
        }
    }
    Ok(EXIT_OK)
}
