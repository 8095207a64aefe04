//! The `load_test` job type: trains nothing. It sleeps per epoch and emits
//! epoch rows and tiny checkpoints through the same [`Sink`] the trainer
//! uses, so queue tests and benchmarks exercise claims, leases, fencing,
//! resume and cancel without torch or a GPU.
//!
//! Payload: `{"epochs": 3, "sleep_ms": 10}` (both optional; a job without a
//! run only sleeps, for throughput benchmarks).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use super::JobEnd;
use super::signals::JobSignals;
use crate::events::{Checkpoint, Control, EpochRow, Sink};

#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Payload {
    pub epochs: u32,
    pub sleep_ms: u64,
}

/// Parse a job's payload, naming what is wrong.
pub fn parse(payload: &serde_json::Value) -> anyhow::Result<Payload> {
    serde_json::from_value(payload.clone()).context("load_test payload")
}

/// Sleep `total`, waking every 20 ms to see whether the job must stop.
fn nap(total: Duration, signals: &JobSignals) -> Option<crate::events::StopReason> {
    let end = Instant::now() + total;
    loop {
        if let Some(reason) = signals.stop_reason() {
            return Some(reason);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Pretend to train epochs `start..payload.epochs`, writing each epoch's row
/// and checkpoint through `sink` (None: a run-less job that only sleeps).
pub fn run(
    payload: &Payload,
    start: u32,
    out_dir: &Path,
    signals: &JobSignals,
    mut sink: Option<&mut dyn Sink>,
) -> anyhow::Result<JobEnd> {
    for epoch in start..payload.epochs {
        let began = Instant::now();
        if let Some(reason) = nap(Duration::from_millis(payload.sleep_ms), signals) {
            return Ok(JobEnd::Stopped(reason));
        }
        let Some(sink) = sink.as_deref_mut() else {
            continue;
        };
        let row = EpochRow {
            epoch,
            train_lr: 1e-4,
            train_loss: 1.0 / f64::from(epoch + 1),
            test_loss: None,
            test_acc1: None,
            test_acc5: None,
            n_parameters: 1,
            psnr: None,
            hf_ratio: None,
            epoch_seconds: began.elapsed().as_secs_f64(),
            images_per_second: 0.0,
        };
        if let Control::Stop(reason) = sink.epoch(&row)? {
            return Ok(JobEnd::Stopped(reason));
        }
        let weights = out_dir.join("checkpoint-last.safetensors");
        let state = out_dir.join("checkpoint-last.json");
        std::fs::write(&weights, format!("load-test weights after epoch {epoch}"))
            .with_context(|| format!("writing {}", weights.display()))?;
        std::fs::write(&state, format!("{{\"epoch\": {}}}", epoch + 1))
            .with_context(|| format!("writing {}", state.display()))?;
        if let Control::Stop(reason) = sink.checkpoint(&Checkpoint {
            epoch,
            weights,
            state,
        })? {
            return Ok(JobEnd::Stopped(reason));
        }
    }
    Ok(JobEnd::Finished)
}
