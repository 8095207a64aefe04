//! Workers as the workers page and `GET /api/v1/workers` show them: host,
//! device, GPU, last seen, and the job they hold now. Liveness shown here is
//! for people; the queue decides from leases, never from these rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use maelab_core::db::worker_metrics::{self, StoredSample};

use super::ReadError;

/// A worker not seen for this long (and not stopped) is shown as `lost`.
pub const LOST_AFTER_SECONDS: f64 = 60.0;

/// One worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker_id: Uuid,
    pub name: String,
    pub host: String,
    pub device: String,
    pub gpu_name: Option<String>,
    pub torch_version: String,
    pub pid: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Seconds since the worker was last seen.
    pub last_seen_seconds: f64,
    /// `busy` (holds a running job), `idle`, `lost` (silent past
    /// [`LOST_AFTER_SECONDS`]) or `stopped`.
    pub state: String,
    pub current_run_id: Option<Uuid>,
    pub current_run_name: Option<String>,
    pub current_job_id: Option<i64>,
    /// The newest system sample the worker sent with a heartbeat: CPU %,
    /// resident memory, its GPU's NVML figures. None before the first.
    pub system: Option<StoredSample>,
}

/// Workers, live ones first, newest first within each group; stopped ones
/// only when `include_stopped`.
pub async fn list(pool: &PgPool, include_stopped: bool) -> Result<Vec<WorkerView>, ReadError> {
    select(pool, include_stopped, None).await
}

/// Workers not stopped, and stopped ones last seen within `stopped_seen_within_seconds`
/// (the queue page shows those of the last day); same order as [`list`].
pub async fn list_recent(
    pool: &PgPool,
    stopped_seen_within_seconds: f64,
) -> Result<Vec<WorkerView>, ReadError> {
    select(pool, false, Some(stopped_seen_within_seconds)).await
}

async fn select(
    pool: &PgPool,
    include_stopped: bool,
    stopped_seen_within_seconds: Option<f64>,
) -> Result<Vec<WorkerView>, ReadError> {
    let rows = sqlx::query(
        "select w.worker_id, w.name, w.host, w.device, w.gpu_name, w.torch_version, w.pid,
                w.started_at, w.last_seen_at, w.stopped_at,
                extract(epoch from now() - w.last_seen_at)::float8 as last_seen_seconds,
                j.job_id, j.run_id, r.name as run_name
         from worker w
         left join lateral (
             select job_id, run_id from job
             where worker_id = w.worker_id and state = 'running'
             order by job_id limit 1
         ) j on true
         left join run r on r.run_id = j.run_id
         where $1 or w.stopped_at is null
            or w.last_seen_at > now() - make_interval(secs => $2)
         order by w.stopped_at is not null, w.started_at desc",
    )
    .bind(include_stopped)
    .bind(stopped_seen_within_seconds)
    .fetch_all(pool)
    .await?;
    let ids = rows
        .iter()
        .map(|r| r.try_get("worker_id"))
        .collect::<Result<Vec<Uuid>, _>>()?;
    let mut samples = worker_metrics::latest(pool, &ids).await?;
    rows.iter()
        .map(|r| {
            let worker_id: Uuid = r.try_get("worker_id")?;
            let stopped_at: Option<DateTime<Utc>> = r.try_get("stopped_at")?;
            let seen: f64 = r.try_get("last_seen_seconds")?;
            let job_id: Option<i64> = r.try_get("job_id")?;
            let state = if stopped_at.is_some() {
                "stopped"
            } else if job_id.is_some() {
                "busy"
            } else if seen > LOST_AFTER_SECONDS {
                "lost"
            } else {
                "idle"
            };
            Ok(WorkerView {
                worker_id,
                name: r.try_get("name")?,
                host: r.try_get("host")?,
                device: r.try_get("device")?,
                gpu_name: r.try_get("gpu_name")?,
                torch_version: r.try_get("torch_version")?,
                pid: r.try_get("pid")?,
                started_at: r.try_get("started_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                stopped_at,
                last_seen_seconds: seen,
                state: state.into(),
                current_run_id: r.try_get("run_id")?,
                current_run_name: r.try_get("run_name")?,
                current_job_id: job_id,
                system: samples.remove(&worker_id),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(ReadError::from)
}
