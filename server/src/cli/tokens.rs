//! `maelab token create|list|revoke`: the operator's commands. They talk to
//! the database directly (the same `DATABASE_URL` as the server, or the
//! embedded cluster in the data folder), since creating the first token
//! cannot need a token.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use maelab_core::db;

use super::EXIT_OK;
use crate::auth::tokens;
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

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub async fn run(command: TokenCommand) -> anyhow::Result<u8> {
    let db_args = match &command {
        TokenCommand::Create { db, .. }
        | TokenCommand::List { db }
        | TokenCommand::Revoke { db, .. } => db,
    };
    let (pool, embedded) = connect(db_args).await?;
    let result = match &command {
        TokenCommand::Create { name, .. } => {
            let (secret, info) = tokens::create(&pool, name).await?;
            println!("{secret}");
            eprintln!(
                "created token `{}` ({}); this is the only time its secret is shown",
                info.name, info.prefix
            );
            Ok(EXIT_OK)
        }
        TokenCommand::List { .. } => {
            println!(
                "{:>4}  {:<24}  {:<14}  {:<19}  {:<19}  REVOKED",
                "ID", "NAME", "PREFIX", "CREATED", "LAST USED"
            );
            for t in tokens::list(&pool).await? {
                println!(
                    "{:>4}  {:<24}  {:<14}  {:<19}  {:<19}  {}",
                    t.token_id,
                    t.name,
                    t.prefix,
                    fmt_time(Some(t.created_at)),
                    fmt_time(t.last_used_at),
                    fmt_time(t.revoked_at)
                );
            }
            Ok(EXIT_OK)
        }
        TokenCommand::Revoke { name, .. } => {
            let t = tokens::revoke(&pool, name).await?;
            eprintln!("revoked token `{}` ({})", t.name, t.prefix);
            Ok(EXIT_OK)
        }
    };
    pool.close().await;
    if let Some(pg) = embedded {
        pg.stop()?;
    }
    result
}
