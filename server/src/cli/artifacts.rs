//! `maelab artifacts migrate|gc`: operator commands on the artifact store,
//! against the database directly (like `maelab token`). `migrate` moves
//! artifacts stored inline by an older maelab into the store (idempotent,
//! resumable, sha256 checked); `gc` deletes the objects of deleted or
//! replaced artifacts that no sweep has removed yet.

use anyhow::Context;
use clap::{Args, Subcommand};
use maelab_core::artifact_store::{ArtifactStore, gc, migrate};
use maelab_core::db;

use super::EXIT_OK;
use super::tokens::{DbArgs, with_database};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The artifact store. Unset: the one the server published in the
    /// database, else `<data-dir>/artifacts`.
    #[arg(long, env = "MAELAB_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Move artifacts stored in the database (before the artifact store) into
    /// the store: upload, read back and check the sha256, then point the row
    /// at the object. Safe to interrupt and run again.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
        /// Rows looked up per query.
        #[arg(long, default_value_t = 20)]
        batch: i64,
        /// Move at most this many rows, then stop (default: all).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Delete objects whose artifacts were deleted or replaced.
    Gc {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: ArtifactsCommand) -> anyhow::Result<u8> {
    let args = match &command {
        ArtifactsCommand::Migrate { store, .. } | ArtifactsCommand::Gc { store } => store,
    };
    with_database(&args.db, async |pool| execute(pool, args, &command).await).await
}

async fn execute(
    pool: &sqlx::PgPool,
    args: &StoreArgs,
    command: &ArtifactsCommand,
) -> anyhow::Result<u8> {
    let url = match &args.artifact_store {
        Some(url) => url.clone(),
        None => match db::artifacts::published_store_url(pool).await? {
            Some(url) => url,
            None => std::path::absolute(args.db.data_dir.join("artifacts"))?
                .display()
                .to_string(),
        },
    };
    let store = ArtifactStore::open(&url, &[])?;
    store
        .probe()
        .await
        .with_context(|| format!("the artifact store {url} is unreachable or read-only"))?;
    match command {
        ArtifactsCommand::Migrate { batch, limit, .. } => {
            let done = migrate::move_inline(pool, &store, *batch, *limit).await?;
            println!(
                "moved {}  corrupt (left inline) {}  changed meanwhile {}  still inline {}  store {url}",
                done.moved, done.corrupt, done.raced, done.left
            );
        }
        ArtifactsCommand::Gc { .. } => {
            let deleted = gc::sweep(pool, &store).await?;
            println!("deleted {deleted} orphaned objects from {url}");
        }
    }
    Ok(EXIT_OK)
}
