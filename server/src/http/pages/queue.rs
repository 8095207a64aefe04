//! Queue and workers: queued jobs in claim order with why each waits, running
//! jobs with their worker and heartbeat age, and the workers. Reads
//! [`read_model::queue`] and [`read_model::workers`], as `GET /api/v1/queue`
//! and `GET /api/v1/workers` do.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;

use super::{PageError, Reader, human_duration, render};
use crate::http::AppState;
use crate::read_model::queue::{self, QueueEntry};
use crate::read_model::workers::{self, LOST_AFTER_SECONDS, WorkerView};

/// Queued jobs shown, from the head.
const QUEUED_SHOWN: i64 = 500;
/// Stopped workers are shown for a day after they were last seen.
const STOPPED_SHOWN_SECONDS: f64 = 24.0 * 3600.0;

pub fn router() -> Router<AppState> {
    Router::new().route("/queue", get(show))
}

/// A queued job and why it waits.
struct Waiting {
    job: QueueEntry,
    why: String,
}

/// A running job with its heartbeat age and lease left, in words.
struct Running {
    job: QueueEntry,
    heartbeat_age: String,
    lease_left: Option<String>,
}

/// A worker with when it was last seen, in words, and whether it is gone
/// (stopped, or silent past [`LOST_AFTER_SECONDS`]).
struct Worker {
    worker: WorkerView,
    seen: String,
    gone: bool,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    waiting: Vec<Waiting>,
    running: Vec<Running>,
    workers: Vec<Worker>,
}

fn is_gone(w: &WorkerView) -> bool {
    w.stopped_at.is_some() || w.last_seen_seconds > LOST_AFTER_SECONDS
}

async fn show(_: Reader, State(state): State<AppState>) -> Result<Response, PageError> {
    let view = queue::view(&state.db, QUEUED_SHOWN).await?;
    let workers = workers::list_recent(&state.db, STOPPED_SHOWN_SECONDS).await?;
    let now = Utc::now();
    let live_workers = workers.iter().filter(|w| !is_gone(w)).count();
    let idle_workers = workers
        .iter()
        .filter(|w| !is_gone(w) && w.current_job_id.is_none())
        .count();
    let mut ready_ahead = 0;
    let waiting = view
        .queued
        .into_iter()
        .map(|job| {
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
            Waiting { job, why }
        })
        .collect();
    let running = view
        .running
        .into_iter()
        .map(|job| Running {
            heartbeat_age: job
                .heartbeat_age_seconds
                .map(|s| human_duration(s.max(0.0) as i64))
                .unwrap_or_else(|| "never".into()),
            lease_left: job
                .lease_expires_at
                .map(|t| format!("{:.0}s", (t - now).num_milliseconds() as f64 / 1000.0)),
            job,
        })
        .collect();
    let workers = workers
        .into_iter()
        .map(|worker| Worker {
            seen: human_duration(worker.last_seen_seconds.max(0.0) as i64),
            gone: is_gone(&worker),
            worker,
        })
        .collect();
    render(&QueuePage {
        waiting,
        running,
        workers,
    })
}
