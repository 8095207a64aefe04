//! The `calibrate` job type (studies.md, "Equal compute"): measure the
//! training throughput of every arm of a study that has no calibration yet,
//! stage by stage, on this worker, with the same code as `maelab-worker
//! bench` ([`crate::train::throughput`]); count the images of each run's
//! training split; and hand both to [`studies::finish_calibration`], which
//! turns each arm's seconds into images, sizes and queues every chain, and
//! completes this job in one transaction.
//!
//! Arms are measured side by side, round after round, and each keeps its
//! fastest step: a burst of other work on the machine then slows every arm's
//! slow steps alike instead of one arm's whole measurement, so the ratios
//! between arms (what "equal compute" rests on) survive a busy machine.

use std::path::Path;

use anyhow::Context;
use maelab_core::db::queue::ClaimedJob;
use maelab_core::db::studies::{self, CalibrationDevice, CalibrationTarget, Measured};
use sqlx::PgPool;

use super::JobEnd;
use super::signals::JobSignals;
use crate::data::Split;

/// Rounds over all arms and stages.
pub const ROUNDS: u32 = 3;
/// Untimed steps before each round's timed ones (allocator and kernel warm-up).
pub const WARMUP_STEPS: u32 = 1;
/// Timed steps per arm, stage and round.
pub const TIMED_STEPS: u32 = 3;

/// Measure every stage of every arm of the target.
pub fn measure(
    target: &CalibrationTarget,
    device: tch::Device,
    cache_dir: &Path,
    signals: &JobSignals,
) -> anyhow::Result<Result<Vec<Measured>, JobEnd>> {
    // (arm, config, train images, fastest step seconds so far)
    let mut slots = Vec::new();
    for arm in &target.arms {
        for config in &arm.configs {
            let train = crate::data::open(&config.dataset, Split::Train, cache_dir)
                .with_context(|| format!("opening dataset `{}`", config.dataset))?;
            let train_images = match config.train_subset {
                Some(n) => (n as usize).min(train.len()),
                None => train.len(),
            };
            slots.push((&arm.arm.name, config, train_images, f64::INFINITY));
        }
    }
    for _ in 0..ROUNDS {
        for (arm, config, _, best) in &mut slots {
            if let Some(reason) = signals.stop_reason() {
                return Ok(Err(JobEnd::Stopped(reason)));
            }
            let t = crate::train::throughput::measure(config, device, WARMUP_STEPS, TIMED_STEPS)
                .with_context(|| format!("measuring arm {arm}, {} stage", config.kind.as_str()))?;
            *best = best.min(t.best_step_seconds);
        }
    }
    Ok(Ok(slots
        .into_iter()
        .map(|(arm, config, train_images, best)| {
            let images_per_second = f64::from(config.batch_size) / best.max(1e-9);
            tracing::info!(
                %arm,
                stage = config.kind.as_str(),
                images_per_second,
                train_images,
                "calibrated"
            );
            Measured {
                arm: arm.clone(),
                stage: config.kind,
                images_per_second,
                train_images: train_images as u64,
            }
        })
        .collect()))
}

/// The device as the study page names it.
pub fn device_info(device: tch::Device) -> CalibrationDevice {
    match device {
        tch::Device::Cuda(i) => CalibrationDevice {
            device: format!("cuda:{i}"),
            gpu_name: crate::system::gpu_name(device),
        },
        _ => CalibrationDevice {
            device: "cpu".into(),
            gpu_name: None,
        },
    }
}

/// Read the job's target; a study that is gone fails the job.
pub async fn target(pool: &PgPool, job: &ClaimedJob) -> Result<CalibrationTarget, JobEnd> {
    studies::calibration_target(pool, &job.payload)
        .await
        .map_err(|e| JobEnd::Failed(format!("calibration: {e}")))
}
