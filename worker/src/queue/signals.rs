//! The flags that tell a running job to stop, and the heartbeat task that sets
//! two of them. The training thread only reads atomics, so checking them at
//! every step costs nothing and needs no database round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use maelab_core::db::queue::{self, Lease, QueueError};
use sqlx::PgPool;

use crate::events::StopReason;
use crate::system::Sampler;

/// Why the current job should stop, set from outside the training thread.
#[derive(Debug)]
pub struct JobSignals {
    /// The heartbeat's answer carried `cancel_requested`.
    pub cancel: AtomicBool,
    /// A heartbeat or a write matched no row: another worker owns the job.
    pub lease_lost: AtomicBool,
    /// SIGTERM / Ctrl-C, shared by the whole process.
    pub shutdown: Arc<AtomicBool>,
}

impl JobSignals {
    pub fn new(shutdown: Arc<AtomicBool>) -> Self {
        Self {
            cancel: AtomicBool::new(false),
            lease_lost: AtomicBool::new(false),
            shutdown,
        }
    }

    /// The reason to stop now, if any. A lost lease wins: nothing may be
    /// written then, not even a cancellation.
    pub fn stop_reason(&self) -> Option<StopReason> {
        if self.lease_lost.load(Ordering::SeqCst) {
            Some(StopReason::LeaseLost)
        } else if self.cancel.load(Ordering::SeqCst) {
            Some(StopReason::Cancelled)
        } else if self.shutdown.load(Ordering::SeqCst) {
            Some(StopReason::Shutdown)
        } else {
            None
        }
    }
}

/// Heartbeat `lease` every `every` on `pool` (the worker's own single
/// connection, so a busy main pool never delays it) until aborted.
///
/// A transient database error is logged and retried at the next beat: the
/// lease is long enough to ride out a PostgreSQL restart, and if it is not,
/// the reaper requeues the job and the next beat reports the lease lost.
pub async fn heartbeat_loop(
    pool: PgPool,
    lease: Lease,
    lease_duration: Duration,
    every: Duration,
    signals: Arc<JobSignals>,
    sampler: Arc<std::sync::Mutex<Sampler>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the claim itself just set the lease
    loop {
        tick.tick().await;
        let beat = tokio::time::timeout(every, queue::heartbeat(&pool, &lease, lease_duration));
        match beat.await {
            Ok(Ok(hb)) => {
                if hb.cancel_requested && !signals.cancel.swap(true, Ordering::SeqCst) {
                    tracing::info!(job_id = lease.job_id, "cancel requested");
                }
                super::report_system(&pool, lease.worker_id, Some(lease.job_id), &sampler, every)
                    .await;
            }
            Ok(Err(QueueError::LeaseLost { .. })) => {
                tracing::warn!(job_id = lease.job_id, "lease lost; stopping the job");
                signals.lease_lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(job_id = lease.job_id, error = %e, "heartbeat failed; retrying")
            }
            Err(_) => tracing::warn!(job_id = lease.job_id, "heartbeat timed out; retrying"),
        }
    }
}
