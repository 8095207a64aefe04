//! The learning-rate schedule of MAE (util/lr_sched.py): linear warmup, then a
//! half-cycle cosine down to `min_lr`, as a pure function of the fractional
//! epoch so it is set every iteration and a resumed run lands on the same value.

use maelab_core::config::RunConfig;

/// The learning rate at fractional epoch `epoch` (epoch + step / steps per
/// epoch), before any per-group scale.
pub fn lr_at(epoch: f64, cfg: &RunConfig) -> f64 {
    lr_at_parts(
        epoch,
        cfg.peak_lr(),
        cfg.min_lr,
        cfg.warmup_epochs,
        f64::from(cfg.epochs),
    )
}

/// [`lr_at`] from its parts.
pub fn lr_at_parts(epoch: f64, peak: f64, min_lr: f64, warmup: f64, epochs: f64) -> f64 {
    if epoch < warmup {
        peak * epoch / warmup
    } else {
        let span = (epochs - warmup).max(f64::MIN_POSITIVE);
        let t = ((epoch - warmup) / span).clamp(0.0, 1.0);
        min_lr + (peak - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The fractional epoch of optimizer iteration `step_in_epoch` out of
/// `steps_per_epoch` data iterations.
pub fn fractional_epoch(epoch: u32, step_in_epoch: usize, steps_per_epoch: usize) -> f64 {
    f64::from(epoch) + step_in_epoch as f64 / steps_per_epoch.max(1) as f64
}
