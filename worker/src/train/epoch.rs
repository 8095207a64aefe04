//! One training epoch, shared by pretraining and finetuning: the lr set every
//! iteration from the fractional epoch, gradient accumulation, optional
//! clipping, AdamW, the non-finite loss check and sampled step events.

use std::io::Write;
use std::time::Instant;

use maelab_core::config::RunConfig;
use tch::Tensor;

use super::optim::AdamW;
use super::schedule::{fractional_epoch, lr_at};
use super::{TrainError, TrainOptions, control};
use crate::data::Batch;
use crate::events::{Sink, StepSample, StopReason};

/// Step events per epoch the sink gets (about).
const SAMPLES_PER_EPOCH: usize = 50;

#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// Mean training loss over the epoch's iterations.
    pub loss: f64,
    /// Mean largest-group lr over the iterations (MAE logs the average).
    pub lr: f64,
    pub images: usize,
    pub seconds: f64,
}

pub enum EpochEnd {
    Done(EpochStats),
    Stopped(StopReason),
}

/// Train one epoch on `loader`'s batches (the CPU loader's or the device
/// path's). `forward` returns the batch's loss (a scalar).
pub fn train_epoch(
    config: &RunConfig,
    opts: &TrainOptions,
    epoch: u32,
    loader: impl ExactSizeIterator<Item = Batch>,
    optim: &mut AdamW,
    sink: &mut dyn Sink,
    forward: &mut dyn FnMut(&Batch) -> Tensor,
) -> Result<EpochEnd, TrainError> {
    let n = loader.len();
    let accum = config.accum_iter.max(1) as usize;
    let sample_every = (n / SAMPLES_PER_EPOCH).max(1);
    let start = Instant::now();
    let (mut loss_sum, mut lr_sum, mut iters, mut images) = (0.0, 0.0, 0usize, 0usize);
    let mut lr = lr_at(f64::from(epoch), config);
    optim.zero_grad();
    for (i, batch) in loader.enumerate() {
        if i % accum == 0 {
            lr = lr_at(fractional_epoch(epoch, i, n), config);
        }
        let loss = forward(&batch);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            let err = TrainError::NonFiniteLoss {
                epoch,
                step: optim.step,
            };
            record_failure(opts, epoch, optim.step, &err);
            return Err(err);
        }
        (loss / accum as f64).backward();
        if (i + 1) % accum == 0 {
            if let Some(max) = config.clip_grad {
                optim.clip_grad_norm(max);
            }
            optim.step(lr);
            optim.zero_grad();
        }
        loss_sum += value;
        lr_sum += optim.max_group_lr(lr);
        iters += 1;
        images += batch.images.size()[0] as usize;
        if (i + 1) % sample_every == 0 || i + 1 == n {
            let sample = StepSample {
                epoch,
                step: optim.step,
                progress: (i + 1) as f64 / n.max(1) as f64,
                train_loss: value,
                lr: optim.max_group_lr(lr),
                images_per_second: images as f64 / start.elapsed().as_secs_f64().max(1e-9),
            };
            if let Some(reason) = control(sink.step(&sample))? {
                return Ok(EpochEnd::Stopped(reason));
            }
        }
    }
    let iters_f = iters.max(1) as f64;
    Ok(EpochEnd::Done(EpochStats {
        loss: loss_sum / iters_f,
        lr: lr_sum / iters_f,
        images,
        seconds: start.elapsed().as_secs_f64(),
    }))
}

/// Put the reason a run failed into log.txt, whatever the sink, so the run's
/// folder says why it stopped.
fn record_failure(opts: &TrainOptions, epoch: u32, step: u64, err: &TrainError) {
    let line = serde_json::json!({ "epoch": epoch, "step": step, "error": err.to_string() });
    let path = opts.out_dir.join(super::file_sink::LOG_FILE);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not record the failure in log.txt");
    }
    tracing::error!(epoch, step, "{err}");
}
