//! Notifications for ingest batches, sent after their commits and merged: a
//! task drains what the handlers queued meanwhile and sends one notification
//! per run (its epochs' range) in one statement
//! (`maelab_core::db::ingest::notify_batches`). Under load, many batches
//! share one notification; the live hub reads the rows either way.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Most batches merged into one send.
const DRAIN: usize = 1024;

type Batch = (Uuid, Option<(i32, i32)>);

/// Cloneable handle in `AppState`; the task starts on first use (inside the
/// server's runtime).
#[derive(Clone, Default)]
pub struct IngestNotifier {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Batch>>>,
}

impl IngestNotifier {
    /// Queue the notification of a committed batch.
    pub fn batch(&self, db: &PgPool, run_id: Uuid, epochs: Option<(i32, i32)>) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_forever(db.clone(), rx));
            tx
        });
        if tx.send((run_id, epochs)).is_err() {
            tracing::warn!(%run_id, "ingest notifier stopped; a live page may miss a batch");
        }
    }
}

async fn send_forever(db: PgPool, mut rx: mpsc::UnboundedReceiver<Batch>) {
    let mut buf = Vec::with_capacity(DRAIN);
    while rx.recv_many(&mut buf, DRAIN).await > 0 {
        let merged = merge(&buf);
        buf.clear();
        if let Err(e) = maelab_core::db::ingest::notify_batches(&db, &merged).await {
            if matches!(e, sqlx::Error::PoolClosed) {
                return;
            }
            tracing::warn!(error = %e, "ingest notification failed; live pages catch up later");
        }
    }
}

/// One entry per run, its epoch range the union of its batches'.
fn merge(batches: &[Batch]) -> Vec<Batch> {
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
