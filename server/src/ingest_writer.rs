//! Ingest batches go through a few writer tasks instead of each request's own
//! transaction: a writer takes every batch queued meanwhile and stores them in
//! one transaction (`maelab_core::db::ingest::record_group`), so concurrent
//! clients share one commit, then answers each request and sends one
//! notification per run (its epochs' range) in one statement
//! (`maelab_core::db::ingest::notify_batches`). Under load a commit carries
//! dozens of batches; alone, a batch is written at once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use maelab_core::db::ingest::{self, IngestError, Point, PreparedBatch, Recorded};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

/// Writer tasks, each with its own transaction in flight: while one commits
/// (waits for the disk), another gathers and writes the next group.
const WRITERS: usize = 3;
/// Most batches in one transaction (each at most `ingest::MAX_POINTS` points).
const MAX_GROUP: usize = 64;
/// Batches waiting for a writer before requests wait to queue (backpressure).
const QUEUE: usize = 1024;

struct Job {
    run_id: Uuid,
    batch: PreparedBatch,
    reply: oneshot::Sender<Result<Recorded, IngestError>>,
}

/// Cloneable handle in `AppState`; the writers start on first use (inside the
/// server's runtime).
#[derive(Clone, Default)]
pub struct IngestWriter {
    tx: Arc<OnceLock<mpsc::Sender<Job>>>,
}

impl IngestWriter {
    /// Check a batch, store it (sharing a transaction with batches that
    /// arrive meanwhile) and queue its notification; returns once committed.
    pub async fn record(
        &self,
        db: &PgPool,
        run_id: Uuid,
        points: &[Point],
    ) -> Result<Recorded, IngestError> {
        let batch = PreparedBatch::new(points)?;
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..WRITERS {
                tokio::spawn(write_forever(db.clone(), rx.clone()));
            }
            tx
        });
        let (reply, answer) = oneshot::channel();
        let stopped = || IngestError::Db(sqlx::Error::PoolClosed);
        tx.send(Job {
            run_id,
            batch,
            reply,
        })
        .await
        .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_forever(db: PgPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    loop {
        // The lock is held while waiting: one idle writer gathers the next
        // group while the others write theirs.
        if rx.lock().await.recv_many(&mut jobs, MAX_GROUP).await == 0 {
            return;
        }
        let group: Vec<(Uuid, &PreparedBatch)> =
            jobs.iter().map(|j| (j.run_id, &j.batch)).collect();
        let outcomes = ingest::record_group(&db, &group).await;
        let mut written = Vec::with_capacity(jobs.len());
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            if let Ok(recorded) = &outcome {
                written.push((job.run_id, recorded.epochs));
            }
            // The request may have gone (client disconnected); its batch stays stored.
            let _ = job.reply.send(outcome);
        }
        if let Err(e) = ingest::notify_batches(&db, &merge(&written)).await {
            if matches!(e, sqlx::Error::PoolClosed) {
                return;
            }
            tracing::warn!(error = %e, "ingest notification failed; live pages catch up later");
        }
    }
}

type Written = (Uuid, Option<(i32, i32)>);

/// One entry per run, its epoch range the union of its batches'.
fn merge(batches: &[Written]) -> Vec<Written> {
    let mut by_run: HashMap<Uuid, Option<(i32, i32)>> = HashMap::new();
    for (run_id, epochs) in batches {
        let entry = by_run.entry(*run_id).or_insert(None);
        *entry = match (*entry, *epochs) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
    }
    by_run.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_of_a_run_merge_into_one_range() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut merged = merge(&[(a, Some((3, 4))), (b, None), (a, None), (a, Some((0, 1)))]);
        merged.sort();
        assert_eq!(merged, vec![(a, Some((0, 4))), (b, None)]);
    }
}
