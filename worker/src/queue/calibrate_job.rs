//! The `calibrate` job type (studies.md, "Equal compute"): measure one study
//! arm's training throughput on this worker, stage by stage, with the same
//! code as `maelab-worker bench` ([`crate::train::throughput`]), count the
//! images of an epoch of its training split, and hand both to
//! [`studies::finish_calibration`], which turns the arm's seconds into epochs,
//! sizes every seed's chain and queues them, and completes this job in one
//! transaction.

use std::path::Path;

use anyhow::Context;
use maelab_core::db::queue::ClaimedJob;
use maelab_core::db::studies::{self, CalibrationDevice, CalibrationTarget, Measured};
use sqlx::PgPool;

use super::JobEnd;
use super::signals::JobSignals;
use crate::data::Split;

/// Untimed steps before the timed ones (allocator and kernel warm-up).
pub const WARMUP_STEPS: u32 = 2;
/// Timed steps per stage: long enough to average a step's jitter, short
/// enough that a five-arm study calibrates in a few minutes on a CPU.
pub const TIMED_STEPS: u32 = 6;

/// Measure every stage of the target's arm.
pub fn measure(
    target: &CalibrationTarget,
    device: tch::Device,
    cache_dir: &Path,
    signals: &JobSignals,
) -> anyhow::Result<Result<Vec<Measured>, JobEnd>> {
    let mut out = Vec::new();
    for config in &target.configs {
        if let Some(reason) = signals.stop_reason() {
            return Ok(Err(JobEnd::Stopped(reason)));
        }
        let train = crate::data::open(&config.dataset, Split::Train, cache_dir)
            .with_context(|| format!("opening dataset `{}`", config.dataset))?;
        let train_images = match config.train_subset {
            Some(n) => (n as usize).min(train.len()),
            None => train.len(),
        };
        let t = crate::train::throughput::measure(config, device, WARMUP_STEPS, TIMED_STEPS)
            .with_context(|| format!("measuring the {} stage", config.kind.as_str()))?;
        tracing::info!(
            arm = %target.arm.name,
            stage = config.kind.as_str(),
            images_per_second = t.images_per_second,
            train_images,
            "calibrated"
        );
        out.push(Measured {
            stage: config.kind,
            images_per_second: t.images_per_second,
            train_images: train_images as u64,
        });
    }
    Ok(Ok(out))
}

/// The device as the study page names it.
pub fn device_info(device: tch::Device) -> CalibrationDevice {
    match device {
        tch::Device::Cuda(i) => CalibrationDevice {
            device: format!("cuda:{i}"),
            gpu_name: super::gpu_name(device),
        },
        _ => CalibrationDevice {
            device: "cpu".into(),
            gpu_name: None,
        },
    }
}

/// Read the job's target; a study or arm that is gone fails the job.
pub async fn target(pool: &PgPool, job: &ClaimedJob) -> Result<CalibrationTarget, JobEnd> {
    studies::calibration_target(pool, &job.payload)
        .await
        .map_err(|e| JobEnd::Failed(format!("calibration: {e}")))
}
