//! System samples workers send with their heartbeats: the process's CPU % and
//! resident memory, and per GPU the NVML figures. One insert per heartbeat;
//! the history is bounded by age ([`prune_older_than`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

/// How long samples are kept: long enough to look back at last week's runs.
pub const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// One GPU at one moment. A figure the driver does not give is None.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// CUDA's index, as in the worker's `cuda:N`.
    pub index: i32,
    pub name: Option<String>,
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: Option<i64>,
    pub memory_total_bytes: Option<i64>,
    pub temperature_c: Option<f64>,
    pub power_watts: Option<f64>,
}

/// What a worker reports about itself at one heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SystemSample {
    /// Of one core; None on the first reading (a rate needs two).
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<i64>,
    pub gpus: Vec<GpuSample>,
}

/// A stored sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSample {
    pub sampled_at: DateTime<Utc>,
    #[serde(flatten)]
    pub sample: SystemSample,
}

#[derive(sqlx::FromRow)]
struct SampleRow {
    sampled_at: DateTime<Utc>,
    cpu_percent: Option<f32>,
    rss_bytes: Option<i64>,
    gpus: sqlx::types::Json<Vec<GpuSample>>,
}

impl From<SampleRow> for StoredSample {
    fn from(row: SampleRow) -> Self {
        Self {
            sampled_at: row.sampled_at,
            sample: SystemSample {
                cpu_percent: row.cpu_percent.map(f64::from),
                rss_bytes: row.rss_bytes,
                gpus: row.gpus.0,
            },
        }
    }
}

/// Store one sample of `worker_id`, tagged with the run of `job_id` when the
/// worker has a job, so the run page can chart it. A sample is a sign of life:
/// the worker's `last_seen_at` moves with it, which keeps an idle worker (no
/// lease heartbeat) from reading as lost.
pub async fn record<'e>(
    db: impl PgExecutor<'e>,
    worker_id: Uuid,
    job_id: Option<i64>,
    sample: &SystemSample,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with seen as (update worker set last_seen_at = now() where worker_id = $1)
         insert into worker_sample (worker_id, run_id, cpu_percent, rss_bytes, gpus)
         values ($1, (select run_id from job where job_id = $2), $3, $4, $5)",
    )
    .bind(worker_id)
    .bind(job_id)
    .bind(sample.cpu_percent.map(|v| v.max(0.0) as f32))
    .bind(sample.rss_bytes.map(|v| v.max(0)))
    .bind(sqlx::types::Json(&sample.gpus))
    .execute(db)
    .await?;
    Ok(())
}

/// Delete samples older than `age`; returns how many went.
pub async fn prune_older_than<'e>(
    db: impl PgExecutor<'e>,
    age: Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from worker_sample where sampled_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Delete the samples past [`RETENTION`], logging how many went or why not:
/// for the server's reaper and a worker's start, which a failed prune must
/// not stop.
pub async fn prune_expired_quietly<'e>(db: impl PgExecutor<'e>) {
    match prune_older_than(db, RETENTION).await {
        Ok(n) if n > 0 => tracing::info!(samples = n, "pruned old system samples"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not prune old system samples"),
    }
}

/// The newest sample of each of `worker_ids` that has sent one (one query
/// for a whole workers page).
pub async fn latest<'e>(
    db: impl PgExecutor<'e>,
    worker_ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredSample>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Latest {
        worker_id: Uuid,
        #[sqlx(flatten)]
        sample: SampleRow,
    }
    let rows: Vec<Latest> = sqlx::query_as(
        "select distinct on (worker_id) worker_id, sampled_at, cpu_percent, rss_bytes, gpus
         from worker_sample where worker_id = any($1)
         order by worker_id, sampled_at desc",
    )
    .bind(worker_ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.worker_id, r.sample.into()))
        .collect())
}

/// The samples taken while `run_id`'s jobs ran, oldest first.
pub async fn for_run<'e>(
    db: impl PgExecutor<'e>,
    run_id: Uuid,
) -> Result<Vec<StoredSample>, sqlx::Error> {
    let rows: Vec<SampleRow> = sqlx::query_as(
        "select sampled_at, cpu_percent, rss_bytes, gpus from worker_sample
         where run_id = $1 order by sampled_at",
    )
    .bind(run_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A sample with the worker that sent it and the run its job trained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleOf {
    pub worker_id: Uuid,
    pub run_id: Option<Uuid>,
    #[serde(flatten)]
    pub sample: StoredSample,
}

/// One sample by id (what a `worker_sample` notification names); None when
/// it is gone (pruned).
pub async fn by_id<'e>(
    db: impl PgExecutor<'e>,
    sample_id: i64,
) -> Result<Option<SampleOf>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        worker_id: Uuid,
        run_id: Option<Uuid>,
        #[sqlx(flatten)]
        sample: SampleRow,
    }
    let row: Option<Row> = sqlx::query_as(
        "select worker_id, run_id, sampled_at, cpu_percent, rss_bytes, gpus
         from worker_sample where worker_sample_id = $1",
    )
    .bind(sample_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| SampleOf {
        worker_id: r.worker_id,
        run_id: r.run_id,
        sample: r.sample.into(),
    }))
}
