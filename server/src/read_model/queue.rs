//! The queue as people see it: queued jobs in the order a worker will claim
//! them (priority, then age, then id — the claim query's order) with their
//! 1-based position and why they wait, and running jobs with their worker and
//! heartbeat age.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::ReadError;

/// One job on the queue or running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub job_id: i64,
    pub run_id: Option<Uuid>,
    pub run_name: Option<String>,
    pub job_type: String,
    /// `queued` or `running`.
    pub state: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub enqueued_at: DateTime<Utc>,
    /// Not claimed before this (later than now while backing off after a
    /// lost lease).
    pub run_after: DateTime<Utc>,
    /// The error the last attempt ended with, if any.
    pub last_error: Option<String>,
    /// Queued jobs only: 1 is claimed next.
    pub position: Option<i64>,
    /// Queued jobs only: `backoff until …` after a lost lease, else waiting
    /// for a free worker.
    pub waiting_for: Option<String>,
    pub worker_id: Option<Uuid>,
    pub worker_name: Option<String>,
    /// Running jobs only: the host of the worker.
    pub worker_host: Option<String>,
    /// Running jobs only: seconds since the last heartbeat.
    pub heartbeat_age_seconds: Option<f64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
}

/// The queue: `queued` in claim order, then `running`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub queued: Vec<QueueEntry>,
    pub running: Vec<QueueEntry>,
}

/// Queued (at most `limit`, from the head) and running jobs.
pub async fn view(pool: &PgPool, limit: i64) -> Result<QueueView, ReadError> {
    if !(1..=10_000).contains(&limit) {
        return Err(ReadError::invalid("limit", "must be between 1 and 10000"));
    }
    let rows = sqlx::query(
        "(select j.job_id, j.run_id, r.name as run_name, j.job_type, j.state::text as state,
                 j.priority, j.attempt, j.max_attempts, j.enqueued_at, j.run_after,
                 row_number() over (order by j.priority desc, j.enqueued_at, j.job_id) as position,
                 j.error, j.worker_id, null::text as worker_name, null::text as worker_host,
                 null::float8 as heartbeat_age,
                 j.lease_expires_at, j.cancel_requested, (j.run_after > now()) as backing_off
          from job j left join run r on r.run_id = j.run_id
          where j.state = 'queued'
          order by j.priority desc, j.enqueued_at, j.job_id
          limit $1)
         union all
         (select j.job_id, j.run_id, r.name, j.job_type, j.state::text, j.priority, j.attempt,
                 j.max_attempts, j.enqueued_at, j.run_after, null, j.error, j.worker_id, w.name,
                 w.host, extract(epoch from now() - j.heartbeat_at)::float8, j.lease_expires_at,
                 j.cancel_requested, false
          from job j left join run r on r.run_id = j.run_id
          left join worker w on w.worker_id = j.worker_id
          where j.state = 'running'
          order by j.started_at)",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut view = QueueView {
        queued: Vec::new(),
        running: Vec::new(),
    };
    for r in &rows {
        let state: String = r.try_get("state")?;
        let run_after: DateTime<Utc> = r.try_get("run_after")?;
        let backing_off: bool = r.try_get("backing_off")?;
        let queued = state == "queued";
        let entry = QueueEntry {
            job_id: r.try_get("job_id")?,
            run_id: r.try_get("run_id")?,
            run_name: r.try_get("run_name")?,
            job_type: r.try_get("job_type")?,
            state,
            priority: r.try_get("priority")?,
            attempt: r.try_get("attempt")?,
            max_attempts: r.try_get("max_attempts")?,
            enqueued_at: r.try_get("enqueued_at")?,
            run_after,
            last_error: r.try_get("error")?,
            position: r.try_get("position")?,
            waiting_for: queued.then(|| {
                if backing_off {
                    format!("backoff until {}", run_after.to_rfc3339())
                } else {
                    "a free worker".to_string()
                }
            }),
            worker_id: r.try_get("worker_id")?,
            worker_name: r.try_get("worker_name")?,
            worker_host: r.try_get("worker_host")?,
            heartbeat_age_seconds: r.try_get("heartbeat_age")?,
            lease_expires_at: r.try_get("lease_expires_at")?,
            cancel_requested: r.try_get("cancel_requested")?,
        };
        if queued {
            view.queued.push(entry);
        } else {
            view.running.push(entry);
        }
    }
    Ok(view)
}
