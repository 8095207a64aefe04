//! Queue and workers: queued jobs in claim order with why each waits, running
//! jobs with their worker and heartbeat age, and the workers with the system
//! figures of their last heartbeat. `GET /queue/events` says when any of it
//! may have changed (`static/queue.js` then reads the page again). Reads
//! [`read_model::queue`] and [`read_model::workers`], as `GET /api/v1/queue`
//! and `GET /api/v1/workers` do.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;

use super::{PageError, Reader, render};
use crate::format::human_duration;
use crate::http::AppState;
use crate::read_model::queue::{self, QueueEntry};
use crate::read_model::workers::{self, LOST_AFTER_SECONDS, WorkerView};
use maelab_core::db::worker_metrics::StoredSample;

/// Queued jobs shown, from the head.
const QUEUED_SHOWN: i64 = 500;
/// Stopped workers are shown for a day after they were last seen.
const STOPPED_SHOWN_SECONDS: f64 = 24.0 * 3600.0;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/queue", get(show))
        .route("/queue/events", get(events))
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
    /// The last heartbeat's figures in words (empty before the first).
    cpu: String,
    memory: String,
    gpu: String,
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
        .map(|worker| {
            let (cpu, memory, gpu) = system_words(worker.system.as_ref());
            Worker {
                seen: human_duration(worker.last_seen_seconds.max(0.0) as i64),
                gone: is_gone(&worker),
                worker,
                cpu,
                memory,
                gpu,
            }
        })
        .collect();
    render(&QueuePage {
        waiting,
        running,
        workers,
    })
}

async fn events(_: Reader, State(state): State<AppState>) -> impl IntoResponse {
    crate::live::queue_events(&state.live)
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// CPU, resident memory and GPU figures of a sample, as the page shows them.
fn system_words(sample: Option<&StoredSample>) -> (String, String, String) {
    let Some(s) = sample.map(|s| &s.sample) else {
        return Default::default();
    };
    let cpu = s
        .cpu_percent
        .map(|p| format!("{p:.0}%"))
        .unwrap_or_default();
    let memory = s
        .rss_bytes
        .map(|b| format!("{:.2} GiB", b as f64 / GIB))
        .unwrap_or_default();
    let gpu = s
        .gpus
        .iter()
        .map(|g| {
            let mut parts = vec![format!("cuda:{}", g.index)];
            if let Some(u) = g.utilization_percent {
                parts.push(format!("{u:.0}%"));
            }
            match (g.memory_used_bytes, g.memory_total_bytes) {
                (Some(u), Some(t)) => {
                    parts.push(format!("{:.1}/{:.1} GiB", u as f64 / GIB, t as f64 / GIB))
                }
                (Some(u), None) => parts.push(format!("{:.1} GiB", u as f64 / GIB)),
                _ => {}
            }
            if let Some(t) = g.temperature_c {
                parts.push(format!("{t:.0} °C"));
            }
            if let Some(w) = g.power_watts {
                parts.push(format!("{w:.0} W"));
            }
            parts.join(" · ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    (cpu, memory, gpu)
}

#[cfg(test)]
mod tests {
    use maelab_core::db::worker_metrics::{GpuSample, SystemSample};

    use super::*;

    #[test]
    fn figures_in_words() {
        let sample = StoredSample {
            sampled_at: Utc::now(),
            sample: SystemSample {
                cpu_percent: Some(187.4),
                rss_bytes: Some(3 << 29),
                gpus: vec![GpuSample {
                    index: 1,
                    name: None,
                    utilization_percent: Some(97.0),
                    memory_used_bytes: Some(12 << 30),
                    memory_total_bytes: Some(80 << 30),
                    temperature_c: Some(71.0),
                    power_watts: Some(402.4),
                }],
            },
        };
        assert_eq!(
            system_words(Some(&sample)),
            (
                "187%".to_string(),
                "1.50 GiB".to_string(),
                "cuda:1 · 97% · 12.0/80.0 GiB · 71 °C · 402 W".to_string()
            )
        );
        assert_eq!(system_words(None), Default::default());
    }
}
