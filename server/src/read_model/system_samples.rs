//! A run's system figures as its page charts them: the samples its worker
//! sent with each heartbeat while the run's job ran, as columns (what uPlot
//! draws). The SQL is core's (`worker_metrics::for_run`), shared with workers.

use chrono::{DateTime, Utc};
use maelab_core::db::worker_metrics::{self, StoredSample};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::ReadError;

const MIB: f64 = 1024.0 * 1024.0;

/// One column per figure, one entry per sample, oldest first. GPU figures are
/// the first GPU the worker reported (a job runs on one device); None where a
/// sample has no GPU (a CPU worker, a host without NVML).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SystemColumns {
    /// When the first sample was taken: live points ([`SystemPoint`]) count
    /// their minutes from it.
    pub first_sampled_at: Option<DateTime<Utc>>,
    /// Minutes since the run's first sample.
    pub minutes: Vec<f64>,
    pub cpu_percent: Vec<Option<f64>>,
    pub rss_mib: Vec<Option<f64>>,
    pub gpu_utilization_percent: Vec<Option<f64>>,
    pub gpu_memory_used_mib: Vec<Option<f64>>,
    pub gpu_memory_total_mib: Vec<Option<f64>>,
    pub gpu_temperature_c: Vec<Option<f64>>,
    pub gpu_power_watts: Vec<Option<f64>>,
}

/// One sample in the columns' units: what the run page's stream sends as a
/// `system` event when its worker reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemPoint {
    pub sampled_at: DateTime<Utc>,
    pub cpu_percent: Option<f64>,
    pub rss_mib: Option<f64>,
    pub gpu_utilization_percent: Option<f64>,
    pub gpu_memory_used_mib: Option<f64>,
    pub gpu_memory_total_mib: Option<f64>,
    pub gpu_temperature_c: Option<f64>,
    pub gpu_power_watts: Option<f64>,
}

impl From<&StoredSample> for SystemPoint {
    fn from(s: &StoredSample) -> Self {
        let mib = |b: Option<i64>| b.map(|b| b as f64 / MIB);
        let gpu = s.sample.gpus.first();
        Self {
            sampled_at: s.sampled_at,
            cpu_percent: s.sample.cpu_percent,
            rss_mib: mib(s.sample.rss_bytes),
            gpu_utilization_percent: gpu.and_then(|g| g.utilization_percent),
            gpu_memory_used_mib: mib(gpu.and_then(|g| g.memory_used_bytes)),
            gpu_memory_total_mib: mib(gpu.and_then(|g| g.memory_total_bytes)),
            gpu_temperature_c: gpu.and_then(|g| g.temperature_c),
            gpu_power_watts: gpu.and_then(|g| g.power_watts),
        }
    }
}

impl SystemColumns {
    fn from_samples(samples: &[StoredSample]) -> Self {
        let mut c = Self::default();
        let Some(first) = samples.first().map(|s| s.sampled_at) else {
            return c;
        };
        c.first_sampled_at = Some(first);
        for s in samples {
            let p = SystemPoint::from(s);
            c.minutes
                .push((p.sampled_at - first).num_milliseconds() as f64 / 60_000.0);
            c.cpu_percent.push(p.cpu_percent);
            c.rss_mib.push(p.rss_mib);
            c.gpu_utilization_percent.push(p.gpu_utilization_percent);
            c.gpu_memory_used_mib.push(p.gpu_memory_used_mib);
            c.gpu_memory_total_mib.push(p.gpu_memory_total_mib);
            c.gpu_temperature_c.push(p.gpu_temperature_c);
            c.gpu_power_watts.push(p.gpu_power_watts);
        }
        c
    }
}

/// The system figures of `run_id`'s jobs, as columns.
pub async fn for_run(pool: &PgPool, run_id: Uuid) -> Result<SystemColumns, ReadError> {
    let samples = worker_metrics::for_run(pool, run_id).await?;
    Ok(SystemColumns::from_samples(&samples))
}
