//! [`DbSink`]: the trainer's events written to PostgreSQL through the fenced
//! functions of `maelab_core::db`, from the training thread (`block_on` on
//! the worker's runtime handle).
//!
//! The epoch row goes out at once (live curves) and again, together with its
//! checkpoint and the job's checkpoint pointer, in one transaction when the
//! checkpoint event arrives: a crash between the two leaves the row without
//! the pointer, so the resumed attempt repeats that epoch and upserts the same
//! row: no epoch is lost or duplicated.
//!
//! Bytes go to the artifact store first (streamed from the checkpoint files,
//! under fresh keys), rows after: a row never names an object that is not in
//! the store. A store that stays unreachable past [`WRITE_PATIENCE`] costs
//! that checkpoint (or image), not the run: the pointer stays where it was,
//! and the next checkpoint tries again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use maelab_core::artifact_store::{self, ArtifactStore, StoreError, StoredObject};
use maelab_core::db::artifacts::{self, NewStoredArtifact};
use maelab_core::db::metrics::{self, EpochRecord, StepRecord};
use maelab_core::db::queue::{Lease, QueueError};
use sqlx::PgPool;

use super::signals::JobSignals;
use crate::events::{Checkpoint, Control, EpochRow, Image, Sink, StepSample, StopReason};

/// How long a write keeps retrying through connection errors (a PostgreSQL
/// restart) before the sink gives up and the job fails.
pub(crate) const WRITE_PATIENCE: Duration = Duration::from_secs(120);

pub struct DbSink {
    pub pool: PgPool,
    pub store: ArtifactStore,
    /// How long an upload keeps retrying a transient store error before the
    /// checkpoint (or image) is given up; [`WRITE_PATIENCE`] unless a test
    /// shortens it.
    pub store_patience: Duration,
    pub lease: Lease,
    pub signals: Arc<JobSignals>,
    pub rt: tokio::runtime::Handle,
    pub epochs_total: i32,
    /// Stored in every epoch row's `extra`: which attempt and worker wrote it.
    pub extra: serde_json::Value,
    pending_row: Option<EpochRecord>,
    /// An uploaded checkpoint (weights, state) waiting for its epoch row.
    pending_checkpoint: Option<(i32, StoredObject, StoredObject)>,
}

/// What an upload came to.
enum Uploaded {
    Stored(StoredObject),
    /// The store stayed unreachable; this artifact is skipped.
    GaveUp,
    Stop(StopReason),
}

/// What a write came to, for the trainer.
enum Wrote {
    Ok,
    Stop(StopReason),
}

impl DbSink {
    pub fn new(
        pool: PgPool,
        store: ArtifactStore,
        lease: Lease,
        signals: Arc<JobSignals>,
        rt: tokio::runtime::Handle,
        epochs_total: i32,
        extra: serde_json::Value,
    ) -> Self {
        Self {
            pool,
            store,
            store_patience: WRITE_PATIENCE,
            lease,
            signals,
            rt,
            epochs_total,
            extra,
            pending_row: None,
            pending_checkpoint: None,
        }
    }

    /// Run a fenced write, retrying transient errors; a lost lease sets the
    /// flag and answers Stop.
    fn write<F, Fut>(&self, what: &str, f: F) -> anyhow::Result<Wrote>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), QueueError>>,
    {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            if self.signals.lease_lost.load(Ordering::SeqCst) {
                return Ok(Wrote::Stop(StopReason::LeaseLost));
            }
            match self.rt.block_on(f()) {
                Ok(()) => return Ok(Wrote::Ok),
                Err(QueueError::LeaseLost { .. }) => {
                    self.signals.lease_lost.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        job_id = self.lease.job_id,
                        what,
                        "write rejected: lease lost"
                    );
                    return Ok(Wrote::Stop(StopReason::LeaseLost));
                }
                Err(e) if e.is_transient() && started.elapsed() < WRITE_PATIENCE => {
                    tracing::warn!(job_id = self.lease.job_id, what, error = %e, "write failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e).with_context(|| format!("writing {what}")),
            }
        }
    }

    /// Upload to the store under a fresh key for `name`, retrying transient
    /// errors with backoff for [`Self::store_patience`]; a stop flag ends
    /// the wait. Other store errors (a bad key, refused credentials) fail
    /// the job.
    fn upload<F, Fut>(&self, name: &str, f: F) -> anyhow::Result<Uploaded>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<StoredObject, StoreError>>,
    {
        let run_id = self
            .lease
            .run_id
            .context("a job without a run stores no artifacts")?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            if let Some(reason) = self.signals.stop_reason()
                && reason != StopReason::Shutdown
            {
                return Ok(Uploaded::Stop(reason));
            }
            let key = artifact_store::key::new_key(run_id, name)?;
            match self.rt.block_on(f(key)) {
                Ok(object) => return Ok(Uploaded::Stored(object)),
                Err(e) if e.is_transient() && started.elapsed() < self.store_patience => {
                    tracing::warn!(job_id = self.lease.job_id, name, error = %e, "upload failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) if e.is_transient() => {
                    tracing::error!(
                        job_id = self.lease.job_id, name, error = %e,
                        "the artifact store stayed unreachable; this artifact is skipped"
                    );
                    return Ok(Uploaded::GaveUp);
                }
                Err(e) => return Err(e).with_context(|| format!("uploading {name}")),
            }
        }
    }

    /// Delete objects no committed row names (a write that was refused), and
    /// sweep the objects a commit orphaned (replaced, retention).
    fn tidy(&self, unreferenced: &[&StoredObject]) {
        self.rt.block_on(async {
            for object in unreferenced {
                if let Err(e) = self.store.delete(&object.key).await {
                    tracing::warn!(key = object.key, error = %e, "deleting an unreferenced upload failed");
                }
            }
            artifact_store::gc::sweep_quietly(&self.pool, &self.store).await;
        });
    }

    /// Continue unless a flag says stop.
    fn control(&self) -> Control {
        match self.signals.stop_reason() {
            Some(reason) => Control::Stop(reason),
            None => Control::Continue,
        }
    }

    fn after(&self, wrote: Wrote) -> Control {
        match wrote {
            Wrote::Stop(reason) => Control::Stop(reason),
            Wrote::Ok => self.control(),
        }
    }

    /// The pending row and checkpoint of the same epoch, in one transaction.
    fn flush_checkpoint(&mut self) -> anyhow::Result<Wrote> {
        let (Some(row), Some((epoch, weights, state))) =
            (self.pending_row.as_ref(), self.pending_checkpoint.as_ref())
        else {
            return Ok(Wrote::Ok);
        };
        if row.epoch != *epoch {
            return Ok(Wrote::Ok);
        }
        let wname = format!("checkpoint-e{epoch:04}.safetensors");
        let sname = format!("checkpoint-e{epoch:04}.json");
        let files = [
            NewStoredArtifact {
                kind: "checkpoint",
                epoch: Some(*epoch),
                name: &wname,
                media_type: "application/octet-stream",
                object: weights,
            },
            NewStoredArtifact {
                kind: "checkpoint",
                epoch: Some(*epoch),
                name: &sname,
                media_type: "application/json",
                object: state,
            },
        ];
        let wrote = self.write("epoch row and checkpoint", || async {
            metrics::record_epoch_with_checkpoint(
                &self.pool,
                &self.lease,
                row,
                self.epochs_total,
                &files,
            )
            .await
            .map(|_| ())
        });
        match &wrote {
            Ok(Wrote::Ok) => self.tidy(&[]),
            _ => self.tidy(&[weights, state]),
        }
        let wrote = wrote?;
        self.pending_row = None;
        self.pending_checkpoint = None;
        Ok(wrote)
    }
}

fn to_i32(v: u64, what: &str) -> anyhow::Result<i32> {
    i32::try_from(v).with_context(|| format!("{what} {v} does not fit the database column"))
}

impl Sink for DbSink {
    fn epoch(&mut self, row: &EpochRow) -> anyhow::Result<Control> {
        let record = EpochRecord {
            epoch: to_i32(row.epoch.into(), "epoch")?,
            train_lr: row.train_lr,
            train_loss: row.train_loss,
            test_loss: row.test_loss,
            test_acc1: row.test_acc1,
            test_acc5: row.test_acc5,
            n_parameters: Some(row.n_parameters),
            psnr: row.psnr,
            hf_ratio: row.hf_ratio,
            epoch_seconds: row.epoch_seconds,
            images_per_second: Some(row.images_per_second),
            extra: self.extra.clone(),
        };
        let wrote = self.write("epoch row", || {
            metrics::record_epoch(&self.pool, &self.lease, &record)
        })?;
        self.pending_row = Some(record);
        if let Wrote::Stop(reason) = wrote {
            return Ok(Control::Stop(reason));
        }
        let wrote = self.flush_checkpoint()?;
        // A shutdown waits for this epoch's checkpoint (the next event), so
        // the finished epoch is not trained again.
        Ok(match (wrote, self.signals.stop_reason()) {
            (Wrote::Stop(r), _) => Control::Stop(r),
            (Wrote::Ok, Some(StopReason::Shutdown)) | (Wrote::Ok, None) => Control::Continue,
            (Wrote::Ok, Some(r)) => Control::Stop(r),
        })
    }

    fn step(&mut self, sample: &StepSample) -> anyhow::Result<Control> {
        if let Some(reason) = self.signals.stop_reason() {
            return Ok(Control::Stop(reason));
        }
        let record = StepRecord {
            epoch: to_i32(sample.epoch.into(), "epoch")?,
            step: to_i32(sample.step, "step")?,
            progress: sample.progress.clamp(0.0, 1.0),
            train_loss: sample.train_loss,
            lr: sample.lr,
            images_per_second: Some(sample.images_per_second),
        };
        let wrote = self.write("step row", || {
            metrics::record_step(&self.pool, &self.lease, &record)
        })?;
        Ok(self.after(wrote))
    }

    fn image(&mut self, image: &Image) -> anyhow::Result<Control> {
        let epoch = to_i32(image.epoch.into(), "epoch")?;
        let (store, png) = (&self.store, &image.png);
        let object = match self.upload(&image.name, |key| async move {
            store.put_bytes(&key, png.clone()).await
        })? {
            Uploaded::Stored(object) => object,
            Uploaded::GaveUp => return Ok(Control::Continue),
            Uploaded::Stop(r) => return Ok(Control::Stop(r)),
        };
        let artifact = NewStoredArtifact {
            kind: "reconstruction",
            epoch: Some(epoch),
            name: &image.name,
            media_type: "image/png",
            object: &object,
        };
        let wrote = self.write("reconstruction", || async {
            artifacts::put_artifact(&self.pool, &self.lease, &artifact)
                .await
                .map(|_| ())
        });
        match &wrote {
            Ok(Wrote::Ok) => self.tidy(&[]),
            _ => self.tidy(&[&object]),
        }
        Ok(match wrote? {
            Wrote::Stop(r) => Control::Stop(r),
            Wrote::Ok => Control::Continue,
        })
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<Control> {
        let epoch = to_i32(checkpoint.epoch.into(), "epoch")?;
        // Streamed now, from the files: the trainer overwrites
        // checkpoint-last at the next epoch, after this returns.
        let mut objects = Vec::with_capacity(2);
        let store = &self.store;
        for (path, name) in [
            (
                &checkpoint.weights,
                format!("checkpoint-e{epoch:04}.safetensors"),
            ),
            (&checkpoint.state, format!("checkpoint-e{epoch:04}.json")),
        ] {
            match self.upload(&name, |key| async move { store.put_file(&key, path).await })? {
                Uploaded::Stored(object) => objects.push(object),
                Uploaded::GaveUp => {
                    // This checkpoint never landed: the pointer stays on the
                    // last one that did; the epoch row is already written.
                    self.tidy(&objects.iter().collect::<Vec<_>>());
                    self.pending_checkpoint = None;
                    return Ok(self.control());
                }
                Uploaded::Stop(r) => {
                    self.tidy(&objects.iter().collect::<Vec<_>>());
                    return Ok(Control::Stop(r));
                }
            }
        }
        let (Some(state), Some(weights)) = (objects.pop(), objects.pop()) else {
            anyhow::bail!("a checkpoint needs its weights and state");
        };
        self.pending_checkpoint = Some((epoch, weights, state));
        let wrote = self.flush_checkpoint()?;
        Ok(self.after(wrote))
    }
}
