//! The rules a resolved config must keep. One function, run by the server at
//! submit time and by the worker before it trains, so both sides agree.

use super::{ConfigError, ModelKind, RunConfig, RunKind};

const MAX_NAME_CHARS: usize = 200;
const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 50;

/// Every rule `config` breaks, in field order.
pub(super) fn check(c: &RunConfig) -> Vec<ConfigError> {
    let mut errs = Errs::default();
    let s = &c.shape;

    let name_chars = c.name.chars().count();
    if c.name.trim().is_empty() {
        errs.push("name", "must not be empty");
    } else if name_chars > MAX_NAME_CHARS {
        errs.push(
            "name",
            format!("is {name_chars} characters; at most {MAX_NAME_CHARS}"),
        );
    } else if c.name.chars().any(char::is_control) {
        errs.push("name", "must not contain control characters");
    }
    if c.tags.len() > MAX_TAGS {
        errs.push(
            "tags",
            format!("has {} tags; at most {MAX_TAGS}", c.tags.len()),
        );
    }
    for (i, tag) in c.tags.iter().enumerate() {
        let n = tag.chars().count();
        if tag.trim().is_empty() || n > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            errs.push(
                format!("tags[{i}]"),
                format!("must be 1 to {MAX_TAG_CHARS} printable characters"),
            );
        }
    }

    // Model shape.
    errs.range_u32("img_size", s.img_size, 8, 512);
    errs.range_u32("patch_size", s.patch_size, 1, 64);
    if s.patch_size >= 1 && !s.img_size.is_multiple_of(s.patch_size) {
        errs.push(
            "patch_size",
            format!("{} does not divide img_size {}", s.patch_size, s.img_size),
        );
    }
    errs.range_u32("embed_dim", s.embed_dim, 4, 4096);
    errs.range_u32("depth", s.depth, 1, 48);
    errs.range_u32("num_heads", s.num_heads, 1, 64);
    if s.num_heads >= 1 && !s.embed_dim.is_multiple_of(s.num_heads) {
        errs.push(
            "num_heads",
            format!("{} does not divide embed_dim {}", s.num_heads, s.embed_dim),
        );
    }
    errs.range_u32("decoder_embed_dim", s.decoder_embed_dim, 4, 4096);
    errs.range_u32("decoder_depth", s.decoder_depth, 1, 48);
    errs.range_u32("decoder_num_heads", s.decoder_num_heads, 1, 64);
    if s.decoder_num_heads >= 1 && !s.decoder_embed_dim.is_multiple_of(s.decoder_num_heads) {
        errs.push(
            "decoder_num_heads",
            format!(
                "{} does not divide decoder_embed_dim {}",
                s.decoder_num_heads, s.decoder_embed_dim
            ),
        );
    }
    errs.range_f64("mlp_ratio", s.mlp_ratio, 0.25, 16.0);
    errs.range_u32("num_classes", s.num_classes, 2, 100_000);

    match (c.model, c.wave_in) {
        (ModelKind::Mae, Some(_)) => errs.push("wave_in", "is only for model = \"wave_mae\""),
        (ModelKind::WaveMae, None) => errs.push("wave_in", "is required for model = \"wave_mae\""),
        (ModelKind::WaveMae, Some(wave_in)) => {
            let grid_ok = s.patch_size >= 1 && s.img_size.is_multiple_of(s.patch_size);
            let grid = if grid_ok {
                s.img_size / s.patch_size
            } else {
                0
            };
            if grid_ok && !grid.is_multiple_of(2) {
                errs.push(
                    "wave_in",
                    format!(
                        "the Haar DWT needs an even token grid, but preset {} with patch_size {} gives a {grid}x{grid} grid",
                        c.preset, s.patch_size
                    ),
                );
            }
            // Wave attention works in every block of a wave-carrying part (the
            // encoder always, the decoder in finetuning too, where wave_in
            // only says whether the encoder carries it).
            let dims: &[(&str, u32)] = match (c.kind, wave_in.in_encoder(), wave_in.in_decoder()) {
                (RunKind::Finetune, _, _) | (_, true, false) => &[("embed_dim", s.embed_dim)],
                (_, false, true) => &[("decoder_embed_dim", s.decoder_embed_dim)],
                _ => &[
                    ("embed_dim", s.embed_dim),
                    ("decoder_embed_dim", s.decoder_embed_dim),
                ],
            };
            for (field, dim) in dims {
                if !dim.is_multiple_of(4) {
                    errs.push(
                        *field,
                        format!("{dim} must be divisible by 4 for wave attention's C/4 reduction"),
                    );
                }
            }
            if c.wave_sr == 0 || (grid_ok && grid >= 2 && !(grid / 2).is_multiple_of(c.wave_sr)) {
                errs.push(
                    "wave_sr",
                    format!("{} must divide the DWT grid side {}", c.wave_sr, grid / 2),
                );
            }
        }
        (ModelKind::Mae, None) => {}
    }

    // Optimisation.
    errs.range_u32("epochs", c.epochs, 1, 100_000);
    errs.range_f64(
        "warmup_epochs",
        c.warmup_epochs,
        0.0,
        f64::from(c.epochs.max(1)),
    );
    errs.range_u32("batch_size", c.batch_size, 1, 65_536);
    errs.range_u32("checkpoint_keep_every", c.checkpoint_keep_every, 1, 100_000);
    errs.range_u32("accum_iter", c.accum_iter, 1, 1024);
    errs.positive("blr", c.blr, 10.0);
    if let Some(lr) = c.lr {
        errs.positive("lr", lr, 10.0);
    }
    errs.range_f64("min_lr", c.min_lr, 0.0, 10.0);
    if c.min_lr.is_finite() && c.min_lr > c.peak_lr() {
        errs.push(
            "min_lr",
            format!("{} is above the peak lr {}", c.min_lr, c.peak_lr()),
        );
    }
    errs.range_f64("weight_decay", c.weight_decay, 0.0, 10.0);
    if let Some(clip) = c.clip_grad {
        errs.positive("clip_grad", clip, 1e6);
    }
    if !(c.layer_decay.is_finite() && c.layer_decay > 0.0 && c.layer_decay <= 1.0) {
        errs.push(
            "layer_decay",
            format!("{} must be in (0, 1]", c.layer_decay),
        );
    }

    // Pretraining.
    if !(c.mask_ratio.is_finite() && c.mask_ratio > 0.0 && c.mask_ratio < 1.0) {
        errs.push("mask_ratio", format!("{} must be in (0, 1)", c.mask_ratio));
    } else if s.patch_size >= 1 && s.img_size.is_multiple_of(s.patch_size) {
        let n = f64::from(s.num_patches());
        if (n * (1.0 - c.mask_ratio)).floor() < 1.0 {
            errs.push(
                "mask_ratio",
                format!("{} leaves no visible patch of {n}", c.mask_ratio),
            );
        }
    }
    errs.range_f64("hf_loss_weight", c.hf_loss_weight, 0.0, 1000.0);

    // Finetuning regularisation.
    errs.range_f64("drop_path", c.drop_path, 0.0, 0.99);
    errs.range_f64("smoothing", c.smoothing, 0.0, 0.99);
    errs.range_f64("mixup", c.mixup, 0.0, 100.0);
    errs.range_f64("cutmix", c.cutmix, 0.0, 100.0);
    errs.range_f64("mixup_prob", c.mixup_prob, 0.0, 1.0);
    errs.range_f64("mixup_switch_prob", c.mixup_switch_prob, 0.0, 1.0);
    errs.range_f64("reprob", c.reprob, 0.0, 1.0);

    // Data.
    if c.dataset.trim().is_empty() {
        errs.push("dataset", "must not be empty");
    } else if c.dataset.chars().any(char::is_control) || c.dataset.len() > 4096 {
        errs.push(
            "dataset",
            "must be a name or a path of printable characters",
        );
    }
    if c.train_subset == Some(0) {
        errs.push("train_subset", "must be at least 1 when set");
    }
    if c.test_subset == Some(0) {
        errs.push("test_subset", "must be at least 1 when set");
    }
    if let Some(n) = c.epoch_images
        && n < c.batch_size
    {
        errs.push(
            "epoch_images",
            format!(
                "{n} is less than one batch ({}); an epoch needs at least one",
                c.batch_size
            ),
        );
    }

    // Finetune source.
    match c.kind {
        RunKind::Pretrain => {
            if c.parent_run.is_some() {
                errs.push("parent_run", "is only for finetune runs");
            }
            if c.parent_epoch.is_some() {
                errs.push("parent_epoch", "is only for finetune runs");
            }
        }
        RunKind::Finetune => {
            if c.parent_epoch.is_some() && c.parent_run.is_none() {
                errs.push("parent_epoch", "needs parent_run");
            }
        }
    }
    errs.0
}

#[derive(Default)]
struct Errs(Vec<ConfigError>);

impl Errs {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError::new(field, reason));
    }

    fn range_u32(&mut self, field: &str, v: u32, lo: u32, hi: u32) {
        if v < lo || v > hi {
            self.push(field, format!("{v} is out of range; expected {lo} to {hi}"));
        }
    }

    fn range_f64(&mut self, field: &str, v: f64, lo: f64, hi: f64) {
        if !v.is_finite() || v < lo || v > hi {
            self.push(field, format!("{v} is out of range; expected {lo} to {hi}"));
        }
    }

    fn positive(&mut self, field: &str, v: f64, hi: f64) {
        if !(v.is_finite() && v > 0.0 && v <= hi) {
            self.push(field, format!("{v} must be above 0 and at most {hi}"));
        }
    }
}
