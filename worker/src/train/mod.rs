//! The trainer: MAE pretraining and ViT finetuning on one device, driven by a
//! resolved [`RunConfig`], emitting everything through a [`Sink`]. The
//! standalone `train` command and the queue worker both call [`run`].
//!
//! Recipe: MAE's main_pretrain.py / main_finetune.py (ml.md). Reproducible on
//! the CPU: the model is initialised after `tch::manual_seed(seed)`, and each
//! epoch reseeds torch and the masking generator from (seed, epoch), so a run
//! resumed at an epoch boundary continues exactly as an uninterrupted one.

pub mod autocast;
pub mod checkpoint;
pub mod device;
pub mod epoch;
pub mod evaluate;
pub mod file_sink;
mod finetune;
pub mod matmul_limit;
pub mod optim;
mod pretrain;
pub mod recon_image;
pub mod schedule;
pub mod throughput;

use std::path::{Path, PathBuf};

use maelab_core::config::{ConfigErrors, RunConfig, RunKind};
use tch::Device;

use crate::data::{Batches, DataError, DataOnDevice, Dataset, Split, TrainSet};
use crate::events::{Control, Sink, StopReason};
use crate::model::ModelError;

pub use device::parse_device;
pub use file_sink::FileSink;

/// How and where to train, apart from the run's config.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Checkpoints (and, with [`FileSink`], log.txt and PNGs) go here.
    pub out_dir: PathBuf,
    pub device: Device,
    /// CPU threads for torch (`None`: libtorch's default).
    pub threads: Option<usize>,
    /// Threads building augmented batches (when the data stays on the host).
    pub loader_threads: usize,
    /// Whether the decoded training set goes to `device` and batches are
    /// augmented there, or stay with the CPU loader's threads.
    pub data_on_device: DataOnDevice,
    /// Continue from `out_dir/checkpoint-last.*` when it exists.
    pub resume: bool,
    /// Finetune: a pretrain checkpoint (safetensors) whose encoder is loaded.
    pub init_checkpoint: Option<PathBuf>,
    /// Where decoded datasets are cached.
    pub cache_dir: PathBuf,
}

/// How a run ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch ran.
    Finished,
    /// A sink asked to stop; the last finished epoch's checkpoint is on disk.
    Stopped(StopReason),
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid run config: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("device `{name}`: {reason}")]
    Device { name: String, reason: String },
    #[error(transparent)]
    Bf16Unsupported(#[from] autocast::Bf16Unsupported),
    #[error("dataset: {0}")]
    Data(#[from] DataError),
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "training loss is not finite (NaN or infinite) at epoch {epoch}, step {step}; lower the learning rate or set clip_grad"
    )]
    NonFiniteLoss { epoch: u32, step: u64 },
    #[error("reconstruction image: {0}")]
    Image(#[from] image::ImageError),
    #[error("event sink: {0:#}")]
    Sink(anyhow::Error),
}

/// Train `config` to the end, or until a sink says stop.
pub fn run(
    config: &RunConfig,
    opts: &TrainOptions,
    sink: &mut dyn Sink,
) -> Result<Outcome, TrainError> {
    config.validate()?;
    // Refused before any data is read (pretrain::run and finetune::run make their own).
    autocast::Autocast::new(config.precision, opts.device)?;
    if let Some(n) = opts.threads {
        tch::set_num_threads(n.max(1) as i32);
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| TrainError::Io {
        path: opts.out_dir.clone(),
        source,
    })?;
    let (train, test) = open_data(config, &opts.cache_dir)?;
    tracing::info!(
        train = train.len(),
        test = test.len(),
        kind = config.kind.as_str(),
        "data ready"
    );
    match config.kind {
        RunKind::Pretrain => pretrain::run(config, opts, train, test, sink),
        RunKind::Finetune => finetune::run(config, opts, train, test, sink),
    }
}

/// The run's train and test splits, cut to their subsets (seeded).
fn open_data(config: &RunConfig, cache_dir: &Path) -> Result<(Dataset, Dataset), TrainError> {
    let mut train = crate::data::open(&config.dataset, Split::Train, cache_dir)?;
    let mut test = crate::data::open(&config.dataset, Split::Test, cache_dir)?;
    if let Some(n) = config.train_subset {
        train = train.subset(n as usize, config.seed);
    }
    if let Some(n) = config.test_subset {
        test = test.subset(n as usize, config.seed);
    }
    Ok((train, test))
}

/// A sink's answer as the trainer acts on it.
fn control(answer: anyhow::Result<Control>) -> Result<Option<StopReason>, TrainError> {
    match answer.map_err(TrainError::Sink)? {
        Control::Continue => Ok(None),
        Control::Stop(reason) => Ok(Some(reason)),
    }
}

/// Seed of torch's generator and of the masking generator for `epoch`:
/// a splitmix64 step over (seed, epoch), so epochs draw independent streams.
pub fn epoch_seed(seed: u64, epoch: u32) -> u64 {
    let mut z = seed ^ (u64::from(epoch) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed torch for `epoch` (dropout-free models only draw in drop path).
fn seed_torch(seed: u64, epoch: u32) {
    tch::manual_seed((epoch_seed(seed, epoch) >> 1) as i64);
}

/// The shuffled, augmented training batches of `epoch`, drawn the same way by
/// both recipes (the augmentation follows the run's kind).
fn epoch_loader(
    train: &TrainSet,
    config: &RunConfig,
    opts: &TrainOptions,
    epoch: u32,
) -> Result<Batches, DataError> {
    train.batches(crate::data::LoaderConfig {
        batch_size: config.batch_size as usize,
        shuffle: true,
        drop_last: true,
        seed: config.seed,
        epoch: u64::from(epoch),
        augment: crate::data::Augment::for_run(config),
        limit: config.epoch_images.map(|n| n as usize),
        threads: opts.loader_threads,
        prefetch: 2 * opts.loader_threads.max(1),
    })
}

/// The training split where `opts` wants it: on the training device when it
/// fits (batches augmented there), else with the CPU loader.
fn place_train(train: Dataset, opts: &TrainOptions) -> Result<TrainSet, TrainError> {
    let placed = TrainSet::place(train, opts.data_on_device, opts.device)?;
    tracing::info!(on_device = placed.is_on_device(), "training data placed");
    Ok(placed)
}

/// AdamW for `config` over `vs` with the recipe's betas for its kind.
fn build_optimizer(config: &RunConfig, vs: &tch::nn::VarStore) -> optim::AdamW {
    let betas = match config.kind {
        RunKind::Pretrain => (0.9, 0.95),
        RunKind::Finetune => (0.9, 0.999),
    };
    optim::AdamW::new(
        vs,
        optim::AdamWConfig {
            betas,
            eps: 1e-8,
            weight_decay: config.weight_decay,
            layer_decay: config.layer_decay,
            depth: config.shape.depth,
        },
    )
}

/// With `--resume` and a checkpoint in `out_dir`: load weights and optimizer
/// state, return the epoch to start at. Otherwise 0 (and `false`).
fn resume(
    config: &RunConfig,
    opts: &TrainOptions,
    vs: &tch::nn::VarStore,
    optim: &mut optim::AdamW,
) -> Result<(u32, bool), TrainError> {
    let state_path = opts.out_dir.join(checkpoint::STATE_FILE);
    if !opts.resume {
        return Ok((0, false));
    }
    if !state_path.exists() {
        tracing::info!(dir = %opts.out_dir.display(), "no checkpoint to resume from; starting at epoch 0");
        return Ok((0, false));
    }
    let state = checkpoint::read_state(&state_path)?;
    checkpoint::check_resumable(&state, config, &state_path)?;
    let weights = opts.out_dir.join(checkpoint::WEIGHTS_FILE);
    let tensors = checkpoint::read_tensors(&weights)?;
    checkpoint::load_into(vs, &tensors, &weights, |_| false)?;
    optim
        .load_state(&tensors, state.step)
        .map_err(|reason| TrainError::Checkpoint {
            path: weights.clone(),
            reason,
        })?;
    tracing::info!(epoch = state.epoch, step = state.step, "resumed");
    Ok((state.epoch, true))
}

/// End of an epoch: write the checkpoint files, then give the sink the
/// image (if any), the epoch row and the checkpoint, in that order.
fn finish_epoch(
    config: &RunConfig,
    opts: &TrainOptions,
    vs: &tch::nn::VarStore,
    optim: &optim::AdamW,
    row: &crate::events::EpochRow,
    image: Option<crate::events::Image>,
    sink: &mut dyn Sink,
) -> Result<Option<StopReason>, TrainError> {
    let state = checkpoint::CheckpointState::new(config, row.epoch + 1, optim.step);
    let (weights, state_path) = checkpoint::save(&opts.out_dir, vs, optim, &state)?;
    if let Some(image) = image
        && let Some(reason) = control(sink.image(&image))?
    {
        return Ok(Some(reason));
    }
    if let Some(reason) = control(sink.epoch(row))? {
        return Ok(Some(reason));
    }
    let event = crate::events::Checkpoint {
        epoch: row.epoch,
        weights,
        state: state_path,
    };
    control(sink.checkpoint(&event))
}
