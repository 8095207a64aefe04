//! The `train` job type: fetch what the trainer needs from the database (the
//! run's config, the resume checkpoint, a finetune's parent checkpoint) into
//! the job's folder, then call [`crate::train::run`] on a blocking thread with
//! a [`DbSink`].

use std::path::Path;

use anyhow::Context;
use maelab_core::artifact_store::{ArtifactStore, StoreError};
use maelab_core::db::artifacts::{self, Artifact, ArtifactBody};
use maelab_core::db::queue::{ClaimedJob, QueueError, is_transient_sqlx};
use maelab_core::db::runs;
use sqlx::PgPool;

use super::JobEnd;
use crate::train::checkpoint::{STATE_FILE, WEIGHTS_FILE};

/// Write checkpoint `files` (weights `.safetensors` and state `.json`) into
/// `dir` as `<stem>.safetensors` / `<stem>.json`: streamed from the store
/// with their sha256 checked (a corrupt object is an error, never trained
/// from), or written from the row for checkpoints stored before the store.
async fn place(
    store: &ArtifactStore,
    files: &[Artifact],
    dir: &Path,
    weights_name: &str,
    state_name: &str,
) -> anyhow::Result<()> {
    let mut have_weights = false;
    for file in files {
        let target = if file.name.ends_with(".safetensors") {
            have_weights = true;
            dir.join(weights_name)
        } else if file.name.ends_with(".json") {
            dir.join(state_name)
        } else {
            continue;
        };
        match &file.body {
            ArtifactBody::Inline(bytes) => tokio::fs::write(&target, bytes)
                .await
                .with_context(|| format!("writing {}", target.display()))?,
            ArtifactBody::Stored { key } => {
                store
                    .download_to_file(key, &file.sha256, &target)
                    .await
                    .with_context(|| format!("downloading {} ({key})", file.name))?;
            }
        }
    }
    anyhow::ensure!(have_weights, "the stored checkpoint has no weights file");
    Ok(())
}

/// What the trainer needs, fetched: the config, whether to resume, and the
/// finetune's initial checkpoint.
pub struct Prepared {
    pub config: maelab_core::RunConfig,
    pub resume: bool,
    pub init_checkpoint: Option<std::path::PathBuf>,
}

/// Fetch the config and checkpoints of `job` into `dir`. Errors here fail the
/// job with the reason (a stored config that no longer validates, a missing
/// or corrupt checkpoint): retrying would fail the same way. Connection
/// errors ([`is_transient`]) are the exception; the caller retries those.
pub async fn prepare(
    pool: &PgPool,
    store: &ArtifactStore,
    job: &ClaimedJob,
    dir: &Path,
) -> anyhow::Result<Prepared> {
    let run_id = job.lease.run_id.context("a train job needs a run")?;
    let config = runs::run_config(pool, run_id)
        .await
        .context("reading the run's config")?;
    let mut resume = false;
    if let Some(epoch) = job.checkpoint_epoch {
        let files = artifacts::checkpoint_files(pool, run_id, epoch)
            .await
            .with_context(|| format!("fetching the checkpoint of epoch {epoch}"))?;
        place(store, &files, dir, WEIGHTS_FILE, STATE_FILE)
            .await
            .with_context(|| format!("restoring the checkpoint of epoch {epoch}"))?;
        resume = true;
        tracing::info!(epoch, "resuming from the stored checkpoint");
    }
    let mut init_checkpoint = None;
    if let Some(parent) = config.parent_run {
        let view = runs::get_run(pool, parent)
            .await?
            .with_context(|| format!("parent run {parent} is gone"))?;
        let epoch = view.parent_epoch_or_last(config.parent_epoch);
        let files = artifacts::checkpoint_files(pool, parent, epoch)
            .await
            .with_context(|| {
                format!("fetching parent run {parent}'s checkpoint of epoch {epoch}")
            })?;
        anyhow::ensure!(
            !files.is_empty(),
            "parent run {parent} has no checkpoint at epoch {epoch}"
        );
        place(store, &files, dir, "parent.safetensors", "parent.json")
            .await
            .with_context(|| format!("restoring parent run {parent}'s checkpoint"))?;
        init_checkpoint = Some(dir.join("parent.safetensors"));
    }
    Ok(Prepared {
        config,
        resume,
        init_checkpoint,
    })
}

/// Extension for the parent's epoch: the named one, else its last.
trait ParentEpoch {
    fn parent_epoch_or_last(&self, named: Option<u32>) -> i32;
}

impl ParentEpoch for runs::RunView {
    fn parent_epoch_or_last(&self, named: Option<u32>) -> i32 {
        named
            .and_then(|e| i32::try_from(e).ok())
            .unwrap_or(self.epochs_total - 1)
    }
}

/// Whether `e` came from a database or store error a retry can cure (the
/// connection dropped, PostgreSQL restarting, the bucket unreachable): such
/// an error must not fail the job.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            s.is_transient()
        } else if let Some(q) = cause.downcast_ref::<QueueError>() {
            q.is_transient()
        } else if let Some(runs::RunError::Db(db)) = cause.downcast_ref::<runs::RunError>() {
            is_transient_sqlx(db)
        } else {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_transient_sqlx)
        }
    })
}

/// Map the trainer's answer to how the job ends.
pub fn outcome(result: Result<crate::train::Outcome, crate::train::TrainError>) -> JobEnd {
    match result {
        Ok(crate::train::Outcome::Finished) => JobEnd::Finished,
        Ok(crate::train::Outcome::Stopped(reason)) => JobEnd::Stopped(reason),
        Err(e) => JobEnd::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_transient_through_context_and_bad_data_is_not() {
        let dropped = anyhow::Error::from(runs::RunError::Db(sqlx::Error::PoolTimedOut))
            .context("reading the run's config");
        assert!(is_transient(&dropped));
        let queue = anyhow::Error::from(QueueError::Db(sqlx::Error::PoolClosed))
            .context("fetching the checkpoint of epoch 3");
        assert!(is_transient(&queue));
        let gone = anyhow::anyhow!("parent run 42 is gone").context("preparing");
        assert!(!is_transient(&gone));
        let missing = anyhow::Error::from(runs::RunError::NotFound(uuid::Uuid::nil()));
        assert!(!is_transient(&missing));
    }
}
