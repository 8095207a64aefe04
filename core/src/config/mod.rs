//! The run config: what a researcher submits (TOML from the CLI, JSON from the
//! API, a form from the browser) and what a worker trains.
//!
//! [`RunConfigInput`] is the submitted document: strict about keys and types,
//! lenient about what is left out. [`RunConfig::resolve`] fills the gaps from the
//! preset and the recipe of the run's kind (ml.md), then validates everything at
//! once. The resolved [`RunConfig`] is fully explicit; it is what the database
//! stores, so a run can be reproduced without knowing the defaults of the day.

mod error;
mod preset;
mod validate;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use error::{ConfigError, ConfigErrors};
pub use preset::{ModelShape, PRESET_NAMES, preset};

/// Pretraining (masked reconstruction) or finetuning (classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Pretrain,
    Finetune,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pretrain => "pretrain",
            Self::Finetune => "finetune",
        }
    }
}

/// Plain MAE or MAE with Wave-ViT's wavelet attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Mae,
    WaveMae,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mae => "mae",
            Self::WaveMae => "wave_mae",
        }
    }
}

/// Where Wave-MAE puts its wavelet attention (ml.md, "Wave-MAE").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveIn {
    Encoder,
    Decoder,
    Both,
}

impl WaveIn {
    pub fn in_encoder(self) -> bool {
        matches!(self, Self::Encoder | Self::Both)
    }
    pub fn in_decoder(self) -> bool {
        matches!(self, Self::Decoder | Self::Both)
    }
}

/// Numeric precision of the training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    /// The forward pass under libtorch's bf16 autocast (fp32 weights, gradients
    /// and optimizer state); for CUDA, and allowed on the CPU.
    Bf16,
}

/// A submitted config: every key optional but `kind`, unknown keys rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfigInput {
    pub name: Option<String>,
    pub kind: Option<RunKind>,
    pub model: Option<ModelKind>,
    pub preset: Option<String>,
    pub tags: Option<Vec<String>>,

    // Model shape; the preset supplies what is left out.
    pub img_size: Option<u32>,
    pub patch_size: Option<u32>,
    pub embed_dim: Option<u32>,
    pub depth: Option<u32>,
    pub num_heads: Option<u32>,
    pub decoder_embed_dim: Option<u32>,
    pub decoder_depth: Option<u32>,
    pub decoder_num_heads: Option<u32>,
    pub mlp_ratio: Option<f64>,
    pub num_classes: Option<u32>,
    pub wave_in: Option<WaveIn>,
    pub wave_sr: Option<u32>,

    // Optimisation.
    pub epochs: Option<u32>,
    pub warmup_epochs: Option<f64>,
    pub batch_size: Option<u32>,
    pub accum_iter: Option<u32>,
    pub blr: Option<f64>,
    pub lr: Option<f64>,
    pub min_lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub clip_grad: Option<f64>,
    pub layer_decay: Option<f64>,
    pub seed: Option<u64>,
    pub precision: Option<Precision>,

    // Pretraining.
    pub mask_ratio: Option<f64>,
    pub norm_pix_loss: Option<bool>,
    pub hf_loss_weight: Option<f64>,

    // Finetuning regularisation.
    pub drop_path: Option<f64>,
    pub smoothing: Option<f64>,
    pub mixup: Option<f64>,
    pub cutmix: Option<f64>,
    pub mixup_prob: Option<f64>,
    pub mixup_switch_prob: Option<f64>,
    pub reprob: Option<f64>,

    // Data.
    pub dataset: Option<String>,
    pub train_subset: Option<u32>,
    pub test_subset: Option<u32>,
    pub epoch_images: Option<u32>,
    /// Keep the checkpoint of every N-th epoch for good (default 10).
    pub checkpoint_keep_every: Option<u32>,

    // Finetune source.
    pub parent_run: Option<Uuid>,
    pub parent_epoch: Option<u32>,
}

/// A resolved, validated run config. Every field is explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub name: String,
    pub kind: RunKind,
    pub model: ModelKind,
    pub preset: String,
    pub tags: Vec<String>,
    pub shape: ModelShape,
    /// Set exactly when `model` is `wave_mae`.
    pub wave_in: Option<WaveIn>,
    /// Spatial reduction of Wave-ViT's keys/values (1: none).
    pub wave_sr: u32,

    pub epochs: u32,
    pub warmup_epochs: f64,
    pub batch_size: u32,
    pub accum_iter: u32,
    /// Base learning rate; the absolute rate is `blr * effective batch / 256`.
    pub blr: f64,
    /// Absolute learning rate; overrides `blr` when set.
    pub lr: Option<f64>,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub clip_grad: Option<f64>,
    /// Layer-wise lr decay (finetuning; 1.0 means none).
    pub layer_decay: f64,
    pub seed: u64,
    pub precision: Precision,

    pub mask_ratio: f64,
    pub norm_pix_loss: bool,
    pub hf_loss_weight: f64,

    pub drop_path: f64,
    pub smoothing: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub mixup_prob: f64,
    pub mixup_switch_prob: f64,
    pub reprob: f64,

    /// `cifar10` (the worker's configured copy), or a path the worker can read:
    /// a CIFAR-10 binary folder, an ImageFolder tree or a `.tar.gz` of one.
    pub dataset: String,
    pub train_subset: Option<u32>,
    pub test_subset: Option<u32>,
    /// Training images drawn per epoch, a fresh random sample of the training
    /// split each epoch (None: all of it). An equal-compute study sets it, so
    /// the images a run sees are the images its seconds buy, not whole epochs.
    #[serde(default)]
    pub epoch_images: Option<u32>,
    /// Retention: besides the newest checkpoint (the resume point) and the
    /// last epoch's, the checkpoint of every N-th epoch is kept for good;
    /// the others are deleted, in the store too. Older stored configs lack
    /// it and keep the default.
    #[serde(default = "default_checkpoint_keep_every")]
    pub checkpoint_keep_every: u32,

    pub parent_run: Option<Uuid>,
    pub parent_epoch: Option<u32>,
}

/// The dataset name that means "the worker's own CIFAR-10 copy".
pub const DEFAULT_DATASET: &str = "cifar10";

impl RunConfig {
    /// Parse a TOML document (the CLI's `run.toml`) and resolve it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let input: RunConfigInput = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let reason = e.inner().message().to_string();
            ConfigErrors::one(clean_path(&field), reason)
        })?;
        Self::resolve(input)
    }

    /// Parse a JSON value (the API's body) and resolve it.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, ConfigErrors> {
        let input: RunConfigInput = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            ConfigErrors::one(clean_path(&field), strip_position(&e.inner().to_string()))
        })?;
        Self::resolve(input)
    }

    /// Parse a JSON text and resolve it.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigErrors> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConfigErrors::one("", format!("not valid JSON: {e}")))?;
        Self::from_json_value(value)
    }

    /// Fill every unset field from the preset and the recipe of the run's kind,
    /// then validate the whole config, reporting every bad field at once.
    pub fn resolve(input: RunConfigInput) -> Result<Self, ConfigErrors> {
        let kind = input.kind.unwrap_or(RunKind::Pretrain);
        let model = input.model.unwrap_or(ModelKind::Mae);
        let preset_name = input
            .preset
            .clone()
            .unwrap_or_else(|| "vit-micro/4".to_string());
        let base = preset(&preset_name).ok_or_else(|| {
            ConfigErrors::one(
                "preset",
                format!(
                    "unknown preset `{preset_name}`; expected one of {}",
                    PRESET_NAMES.join(", ")
                ),
            )
        })?;
        let shape = ModelShape {
            img_size: input.img_size.unwrap_or(base.img_size),
            patch_size: input.patch_size.unwrap_or(base.patch_size),
            in_chans: base.in_chans,
            embed_dim: input.embed_dim.unwrap_or(base.embed_dim),
            depth: input.depth.unwrap_or(base.depth),
            num_heads: input.num_heads.unwrap_or(base.num_heads),
            decoder_embed_dim: input.decoder_embed_dim.unwrap_or(base.decoder_embed_dim),
            decoder_depth: input.decoder_depth.unwrap_or(base.decoder_depth),
            decoder_num_heads: input.decoder_num_heads.unwrap_or(base.decoder_num_heads),
            mlp_ratio: input.mlp_ratio.unwrap_or(base.mlp_ratio),
            num_classes: input.num_classes.unwrap_or(base.num_classes),
        };
        let pretrain = kind == RunKind::Pretrain;
        let wave_in = match model {
            ModelKind::WaveMae => Some(input.wave_in.unwrap_or(WaveIn::Decoder)),
            ModelKind::Mae => input.wave_in,
        };
        let default_name = format!("{}-{}-{}", model.as_str(), kind.as_str(), preset_name);
        let config = RunConfig {
            name: input.name.unwrap_or(default_name),
            kind,
            model,
            preset: preset_name,
            tags: input.tags.unwrap_or_default(),
            shape,
            wave_in,
            wave_sr: input.wave_sr.unwrap_or(1),
            epochs: input.epochs.unwrap_or(if pretrain { 100 } else { 50 }),
            warmup_epochs: input.warmup_epochs.unwrap_or(5.0),
            batch_size: input.batch_size.unwrap_or(128),
            accum_iter: input.accum_iter.unwrap_or(1),
            blr: input.blr.unwrap_or(if pretrain { 1.5e-4 } else { 1e-3 }),
            lr: input.lr,
            min_lr: input.min_lr.unwrap_or(if pretrain { 0.0 } else { 1e-6 }),
            weight_decay: input.weight_decay.unwrap_or(0.05),
            clip_grad: input.clip_grad,
            layer_decay: input
                .layer_decay
                .unwrap_or(if pretrain { 1.0 } else { 0.75 }),
            seed: input.seed.unwrap_or(0),
            precision: input.precision.unwrap_or_default(),
            mask_ratio: input.mask_ratio.unwrap_or(0.75),
            norm_pix_loss: input.norm_pix_loss.unwrap_or(true),
            hf_loss_weight: input.hf_loss_weight.unwrap_or(0.0),
            drop_path: input.drop_path.unwrap_or(if pretrain { 0.0 } else { 0.1 }),
            smoothing: input.smoothing.unwrap_or(0.1),
            mixup: input.mixup.unwrap_or(0.8),
            cutmix: input.cutmix.unwrap_or(1.0),
            mixup_prob: input.mixup_prob.unwrap_or(1.0),
            mixup_switch_prob: input.mixup_switch_prob.unwrap_or(0.5),
            reprob: input.reprob.unwrap_or(0.25),
            dataset: input.dataset.unwrap_or_else(|| DEFAULT_DATASET.to_string()),
            train_subset: input.train_subset,
            test_subset: input.test_subset,
            epoch_images: input.epoch_images,
            checkpoint_keep_every: input
                .checkpoint_keep_every
                .unwrap_or_else(default_checkpoint_keep_every),
            parent_run: input.parent_run,
            parent_epoch: input.parent_epoch,
        };
        config.validate()?;
        Ok(config)
    }

    /// Validate an already resolved config (one read back from the database is
    /// checked again before a worker trains it).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = validate::check(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Images per optimizer step.
    pub fn effective_batch(&self) -> u32 {
        // Saturating: validation calls this before batch_size and accum_iter
        // are range-checked (found by scripts/fuzz-api: a panic, not a 422).
        self.batch_size.saturating_mul(self.accum_iter)
    }

    /// The absolute peak learning rate: `lr`, or `blr * effective batch / 256`.
    pub fn peak_lr(&self) -> f64 {
        self.lr
            .unwrap_or(self.blr * f64::from(self.effective_batch()) / 256.0)
    }

    /// The resolved config as the plain input document that gives it back: what
    /// "clone this run" pre-fills.
    pub fn to_input(&self) -> RunConfigInput {
        RunConfigInput {
            name: Some(self.name.clone()),
            kind: Some(self.kind),
            model: Some(self.model),
            preset: Some(self.preset.clone()),
            tags: Some(self.tags.clone()),
            img_size: Some(self.shape.img_size),
            patch_size: Some(self.shape.patch_size),
            embed_dim: Some(self.shape.embed_dim),
            depth: Some(self.shape.depth),
            num_heads: Some(self.shape.num_heads),
            decoder_embed_dim: Some(self.shape.decoder_embed_dim),
            decoder_depth: Some(self.shape.decoder_depth),
            decoder_num_heads: Some(self.shape.decoder_num_heads),
            mlp_ratio: Some(self.shape.mlp_ratio),
            num_classes: Some(self.shape.num_classes),
            wave_in: self.wave_in,
            wave_sr: Some(self.wave_sr),
            epochs: Some(self.epochs),
            warmup_epochs: Some(self.warmup_epochs),
            batch_size: Some(self.batch_size),
            accum_iter: Some(self.accum_iter),
            blr: Some(self.blr),
            lr: self.lr,
            min_lr: Some(self.min_lr),
            weight_decay: Some(self.weight_decay),
            clip_grad: self.clip_grad,
            layer_decay: Some(self.layer_decay),
            seed: Some(self.seed),
            precision: Some(self.precision),
            mask_ratio: Some(self.mask_ratio),
            norm_pix_loss: Some(self.norm_pix_loss),
            hf_loss_weight: Some(self.hf_loss_weight),
            drop_path: Some(self.drop_path),
            smoothing: Some(self.smoothing),
            mixup: Some(self.mixup),
            cutmix: Some(self.cutmix),
            mixup_prob: Some(self.mixup_prob),
            mixup_switch_prob: Some(self.mixup_switch_prob),
            reprob: Some(self.reprob),
            dataset: Some(self.dataset.clone()),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            epoch_images: self.epoch_images,
            checkpoint_keep_every: Some(self.checkpoint_keep_every),
            parent_run: self.parent_run,
            parent_epoch: self.parent_epoch,
        }
    }
}

/// serde_path_to_error writes `.` for the root; an empty field reads better.
fn clean_path(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

/// serde_json appends " at line L column C", which means nothing for a value
/// that was already parsed.
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests;

/// `checkpoint_keep_every` when a config does not say (the retention maelab
/// always had).
fn default_checkpoint_keep_every() -> u32 {
    crate::db::artifacts::KEEP_EVERY.unsigned_abs()
}
