//! Batch-level mixup / cutmix with label smoothing, as timm's `Mixup` in
//! 'batch' mode (MAE's main_finetune.py): one lambda per batch, each image
//! mixed with its mirror in the batch (`x.flip(0)`), soft targets
//! `lam * onehot(y) + (1 - lam) * onehot(y.flip(0))` with smoothing.

use rand::Rng;

use super::rng::beta_symmetric;

/// The mixing settings (a subset of [`super::FinetuneAugment`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixConfig {
    /// Beta alpha of mixup; 0 disables it.
    pub mixup: f64,
    /// Beta alpha of cutmix; 0 disables it.
    pub cutmix: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of cutmix instead of mixup when both are enabled.
    pub switch_prob: f64,
    pub smoothing: f64,
    pub num_classes: usize,
}

/// What was done to one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Weight of each image's own label (1: unmixed).
    pub lam: f64,
    /// The pasted box (top, bottom, left, right) when cutmix was used.
    pub cutmix_box: Option<(usize, usize, usize, usize)>,
}

impl MixConfig {
    /// Whether images are ever mixed.
    pub fn mixes(&self) -> bool {
        (self.mixup > 0.0 || self.cutmix > 0.0) && self.prob > 0.0
    }

    /// Whether batches carry soft targets (mixing or smoothing).
    pub fn soft_targets(&self) -> bool {
        self.mixup > 0.0 || self.cutmix > 0.0 || self.smoothing > 0.0
    }
}

/// Mix a batch of normalised CHW images in place (`images` is
/// `[batch, channels, height, width]`) and return what was done.
pub fn mix_batch(
    rng: &mut impl Rng,
    cfg: &MixConfig,
    images: &mut [f32],
    batch: usize,
    height: usize,
    width: usize,
) -> Mix {
    let mix = sample_mix(rng, cfg, batch, height, width);
    apply_mix(&mix, images, batch, height, width);
    mix
}

/// What [`mix_batch`] does to a batch, drawn without touching the pixels:
/// whether to mix at all, mixup or cutmix, lambda and the cutmix box. The
/// device path draws here too and mixes on its device.
pub fn sample_mix(
    rng: &mut impl Rng,
    cfg: &MixConfig,
    batch: usize,
    height: usize,
    width: usize,
) -> Mix {
    let unmixed = Mix {
        lam: 1.0,
        cutmix_box: None,
    };
    if batch == 0 || !cfg.mixes() || rng.r#gen::<f64>() >= cfg.prob {
        return unmixed;
    }
    let use_cutmix = if cfg.mixup > 0.0 && cfg.cutmix > 0.0 {
        rng.r#gen::<f64>() < cfg.switch_prob
    } else {
        cfg.cutmix > 0.0
    };
    let alpha = if use_cutmix { cfg.cutmix } else { cfg.mixup };
    let lam = beta_symmetric(rng, alpha);
    if !use_cutmix {
        return Mix {
            lam,
            cutmix_box: None,
        };
    }
    let (top, bottom, left, right) = cutmix_box(rng, lam, height, width);
    // timm's correct_lam: the label weight is the area actually kept.
    let lam = 1.0 - ((bottom - top) * (right - left)) as f64 / (height * width) as f64;
    Mix {
        lam,
        cutmix_box: Some((top, bottom, left, right)),
    }
}

/// Do `mix` to a batch of CHW images in place: paste the mirrored batch's
/// box (cutmix) or blend with it at `lam` (mixup).
pub fn apply_mix(mix: &Mix, images: &mut [f32], batch: usize, height: usize, width: usize) {
    if batch == 0 || (mix.lam == 1.0 && mix.cutmix_box.is_none()) {
        return;
    }
    let per_image = images.len() / batch;
    let original = images.to_vec();
    let partner = |i: usize| &original[(batch - 1 - i) * per_image..(batch - i) * per_image];
    if let Some((top, bottom, left, right)) = mix.cutmix_box {
        let plane = height * width;
        for i in 0..batch {
            let other = partner(i);
            let img = &mut images[i * per_image..(i + 1) * per_image];
            for c in 0..per_image / plane {
                for y in top..bottom {
                    let row = c * plane + y * width;
                    img[row + left..row + right].copy_from_slice(&other[row + left..row + right]);
                }
            }
        }
    } else {
        let (a, b) = (mix.lam as f32, (1.0 - mix.lam) as f32);
        for i in 0..batch {
            let other = partner(i);
            for (v, o) in images[i * per_image..(i + 1) * per_image]
                .iter_mut()
                .zip(other)
            {
                *v = *v * a + o * b;
            }
        }
    }
}

/// timm's `rand_bbox`: a box of side `sqrt(1 - lam)` of the image, centred
/// anywhere, clipped to the image.
fn cutmix_box(
    rng: &mut impl Rng,
    lam: f64,
    height: usize,
    width: usize,
) -> (usize, usize, usize, usize) {
    let ratio = (1.0 - lam).sqrt();
    let cut_h = (height as f64 * ratio) as usize;
    let cut_w = (width as f64 * ratio) as usize;
    let cy = rng.gen_range(0..height);
    let cx = rng.gen_range(0..width);
    let top = cy.saturating_sub(cut_h / 2);
    let bottom = (cy + cut_h / 2).min(height);
    let left = cx.saturating_sub(cut_w / 2);
    let right = (cx + cut_w / 2).min(width);
    (top, bottom, left, right)
}

/// timm's `mixup_target`: smoothed one-hot targets of the batch's labels
/// mixed with those of the mirrored batch, `[batch, num_classes]` row-major.
/// Each row sums to 1.
pub fn mixed_targets(labels: &[i64], lam: f64, smoothing: f64, num_classes: usize) -> Vec<f32> {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let n = labels.len();
    let mut out = vec![0f32; n * num_classes];
    for (i, row) in out.chunks_exact_mut(num_classes).enumerate() {
        let own = labels[i] as usize;
        let other = labels[n - 1 - i] as usize;
        for (k, v) in row.iter_mut().enumerate() {
            let y1 = if k == own { on } else { off };
            let y2 = if k == other { on } else { off };
            *v = (y1 * lam + y2 * (1.0 - lam)) as f32;
        }
    }
    out
}
