//! Queue and workers: queued jobs in claim order with why each waits, running
//! jobs with their worker and heartbeat age, and the workers.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PageError, Reader, human_duration, render};
use crate::http::AppState;

/// A worker not seen for this long is shown as gone (heartbeats come every few seconds).
const WORKER_GONE_SECONDS: i64 = 60;

pub fn router() -> Router<AppState> {
    Router::new().route("/queue", get(show))
}

#[derive(Debug, sqlx::FromRow)]
pub struct QueuedJob {
    pub job_id: i64,
    pub run_id: Option<Uuid>,
    pub name: Option<String>,
    pub job_type: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub enqueued_at: DateTime<Utc>,
    pub run_after: DateTime<Utc>,
    pub error: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct RunningJob {
    pub job_id: i64,
    pub run_id: Option<Uuid>,
    pub name: Option<String>,
    pub attempt: i32,
    pub worker_name: Option<String>,
    pub host: Option<String>,
    pub heartbeat_age: Option<f64>,
    pub lease_left: Option<f64>,
    pub cancel_requested: bool,
}

#[derive(Debug, sqlx::FromRow)]
pub struct WorkerRow {
    pub name: String,
    pub host: String,
    pub device: String,
    pub gpu_name: Option<String>,
    pub torch_version: String,
    pub last_seen_age: f64,
    pub stopped_at: Option<DateTime<Utc>>,
    pub job_id: Option<i64>,
    pub run_id: Option<Uuid>,
    pub run_name: Option<String>,
}

pub struct Waiting {
    pub position: usize,
    pub job: QueuedJob,
    pub why: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    waiting: Vec<Waiting>,
    running: Vec<(RunningJob, String)>,
    workers: Vec<(WorkerRow, String, bool)>,
}

async fn show(_: Reader, State(state): State<AppState>) -> Result<Response, PageError> {
    let db = &state.db;
    let queued = sqlx::query_as::<_, QueuedJob>(
        "select j.job_id, j.run_id, r.name, j.job_type, j.priority, j.attempt, j.max_attempts,
                j.enqueued_at, j.run_after, j.error
         from job j left join run r using (run_id)
         where j.state = 'queued' order by j.priority desc, j.enqueued_at, j.job_id limit 500",
    )
    .fetch_all(db)
    .await?;
    let running = sqlx::query_as::<_, RunningJob>(
        "select j.job_id, j.run_id, r.name, j.attempt, w.name as worker_name, w.host,
                extract(epoch from now() - j.heartbeat_at)::float8 as heartbeat_age,
                extract(epoch from j.lease_expires_at - now())::float8 as lease_left,
                j.cancel_requested
         from job j left join run r using (run_id) left join worker w using (worker_id)
         where j.state = 'running' order by j.started_at",
    )
    .fetch_all(db)
    .await?;
    let workers = sqlx::query_as::<_, WorkerRow>(
        "select w.name, w.host, w.device, w.gpu_name, w.torch_version,
                extract(epoch from now() - w.last_seen_at)::float8 as last_seen_age,
                w.stopped_at, j.job_id, j.run_id, r.name as run_name
         from worker w
         left join job j on j.worker_id = w.worker_id and j.state = 'running'
         left join run r on r.run_id = j.run_id
         where w.stopped_at is null or w.last_seen_at > now() - interval '1 day'
         order by w.stopped_at nulls first, w.last_seen_at desc limit 500",
    )
    .fetch_all(db)
    .await?;
    let now = Utc::now();
    let live_workers = workers
        .iter()
        .filter(|w| w.stopped_at.is_none() && (w.last_seen_age as i64) < WORKER_GONE_SECONDS)
        .count();
    let idle_workers = workers
        .iter()
        .filter(|w| {
            w.stopped_at.is_none()
                && (w.last_seen_age as i64) < WORKER_GONE_SECONDS
                && w.job_id.is_none()
        })
        .count();
    let mut ready_ahead = 0;
    let waiting = queued
        .into_iter()
        .enumerate()
        .map(|(i, job)| {
            let why = if job.run_after > now {
                format!(
                    "backing off after attempt {} of {}: eligible in {}",
                    job.attempt,
                    job.max_attempts,
                    human_duration((job.run_after - now).num_seconds())
                )
            } else if live_workers == 0 {
                "no worker is online".to_string()
            } else if ready_ahead < idle_workers {
                "next for an idle worker".to_string()
            } else if idle_workers == 0 {
                format!("{ready_ahead} job(s) ahead; all {live_workers} online workers are busy")
            } else {
                format!("{ready_ahead} job(s) ahead of it for {idle_workers} idle worker(s)")
            };
            if job.run_after <= now {
                ready_ahead += 1;
            }
            Waiting {
                position: i + 1,
                job,
                why,
            }
        })
        .collect();
    let running = running
        .into_iter()
        .map(|j| {
            let age = j
                .heartbeat_age
                .map(|s| human_duration(s.max(0.0) as i64))
                .unwrap_or_else(|| "never".into());
            (j, age)
        })
        .collect();
    let workers = workers
        .into_iter()
        .map(|w| {
            let gone = w.stopped_at.is_some() || (w.last_seen_age as i64) >= WORKER_GONE_SECONDS;
            let seen = human_duration(w.last_seen_age.max(0.0) as i64);
            (w, seen, gone)
        })
        .collect();
    render(&QueuePage {
        waiting,
        running,
        workers,
    })
}
