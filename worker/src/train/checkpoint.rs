//! `checkpoint-last.safetensors` (model weights and AdamW moments in one file)
//! and `checkpoint-last.json` (epoch, optimizer step, seed, and what the model
//! is, so a checkpoint of another shape is refused with a clear error instead of
//! failing deep inside a tensor copy).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use maelab_core::config::{ModelKind, ModelShape, RunConfig, RunKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Tensor, nn};

use super::TrainError;
use super::optim::AdamW;

pub const WEIGHTS_FILE: &str = "checkpoint-last.safetensors";
pub const STATE_FILE: &str = "checkpoint-last.json";
/// Prefix of the optimizer's tensors inside the weights file.
const OPTIM_PREFIX: &str = "optim.";
/// Bumped when the layout of checkpoints changes.
const FORMAT: u32 = 1;

/// The JSON beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Epochs completed; a resumed run starts at this epoch.
    pub epoch: u32,
    /// Optimizer steps taken (AdamW's bias correction needs it).
    pub step: u64,
    /// The run's seed: per-epoch generators are derived from (seed, epoch).
    pub seed: u64,
    pub kind: RunKind,
    pub model: ModelKind,
    pub preset: String,
    pub shape: ModelShape,
    /// sha256 of the resolved config's JSON, to tell a changed config apart.
    pub config_hash: String,
}

impl CheckpointState {
    pub fn new(config: &RunConfig, epoch: u32, step: u64) -> Self {
        Self {
            format: FORMAT,
            epoch,
            step,
            seed: config.seed,
            kind: config.kind,
            model: config.model,
            preset: config.preset.clone(),
            shape: config.shape.clone(),
            config_hash: config_hash(config),
        }
    }
}

/// sha256 hex of the config's JSON.
pub fn config_hash(config: &RunConfig) -> String {
    let json = serde_json::to_vec(config).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

fn io_err(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Write weights (and optimizer moments) then the JSON, each through a
/// temporary file and a rename, so a crash never leaves half a checkpoint.
/// Returns the paths of the weights and the JSON.
pub fn save(
    dir: &Path,
    vs: &nn::VarStore,
    optim: &AdamW,
    state: &CheckpointState,
) -> Result<(PathBuf, PathBuf), TrainError> {
    let weights = dir.join(WEIGHTS_FILE);
    let json = dir.join(STATE_FILE);
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.extend(optim.state_tensors());
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = dir.join("checkpoint-last.tmp.safetensors");
    Tensor::write_safetensors(&named, &tmp).map_err(|e| bad(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, &weights).map_err(|e| io_err(&weights, e))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| bad(&json, e.to_string()))?;
    let tmp = dir.join("checkpoint-last.json.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &json).map_err(|e| io_err(&json, e))?;
    Ok((weights, json))
}

/// Read the JSON beside a checkpoint.
pub fn read_state(path: &Path) -> Result<CheckpointState, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| bad(path, format!("not a maelab checkpoint state: {e}")))
}

/// Refuse to resume `config` from a checkpoint of another model or shape.
pub fn check_resumable(
    state: &CheckpointState,
    config: &RunConfig,
    path: &Path,
) -> Result<(), TrainError> {
    if state.format != FORMAT {
        return Err(bad(
            path,
            format!("checkpoint format {} is not {FORMAT}", state.format),
        ));
    }
    if state.kind != config.kind || state.model != config.model {
        return Err(bad(
            path,
            format!(
                "written by a {} {} run, this is a {} {} run",
                state.model.as_str(),
                state.kind.as_str(),
                config.model.as_str(),
                config.kind.as_str()
            ),
        ));
    }
    if state.shape != config.shape {
        return Err(bad(
            path,
            shape_mismatch(state, &config.preset, &config.shape),
        ));
    }
    if state.config_hash != config_hash(config) {
        tracing::warn!(path = %path.display(), "the run config changed since this checkpoint was written; resuming anyway");
    }
    Ok(())
}

fn shape_mismatch(state: &CheckpointState, preset: &str, shape: &ModelShape) -> String {
    format!(
        "checkpoint is preset `{}` (embed_dim {}, depth {}, patch {}), this run is preset `{preset}` (embed_dim {}, depth {}, patch {})",
        state.preset,
        state.shape.embed_dim,
        state.shape.depth,
        state.shape.patch_size,
        shape.embed_dim,
        shape.depth,
        shape.patch_size
    )
}

/// Refuse to finetune `config` from a pretrain checkpoint whose encoder has
/// another shape.
pub fn check_encoder_compatible(
    state: &CheckpointState,
    config: &RunConfig,
    path: &Path,
) -> Result<(), TrainError> {
    let (a, b) = (&state.shape, &config.shape);
    let same = a.img_size == b.img_size
        && a.patch_size == b.patch_size
        && a.in_chans == b.in_chans
        && a.embed_dim == b.embed_dim
        && a.depth == b.depth
        && a.num_heads == b.num_heads
        && a.mlp_ratio == b.mlp_ratio;
    if same {
        Ok(())
    } else {
        Err(bad(path, shape_mismatch(state, &config.preset, b)))
    }
}

/// All tensors of a weights file, by name.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    if !path.exists() {
        return Err(bad(path, "file not found"));
    }
    let list = Tensor::read_safetensors(path)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    Ok(list.into_iter().collect())
}

/// Copy tensors into `vs`. Every variable must be present with its shape,
/// except those for which `optional(name)` is true (left as initialised).
/// Returns the names left out.
pub fn load_into(
    vs: &nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    optional: impl Fn(&str) -> bool,
) -> Result<Vec<String>, TrainError> {
    let mut skipped = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut var) in vars {
            match tensors.get(&name) {
                Some(src) if src.size() == var.size() => var.copy_(src),
                Some(src) => {
                    return Err(bad(
                        path,
                        format!(
                            "tensor `{name}` has shape {:?}, the model needs {:?}",
                            src.size(),
                            var.size()
                        ),
                    ));
                }
                None if optional(&name) => skipped.push(name),
                None => return Err(bad(path, format!("tensor `{name}` is missing"))),
            }
        }
        Ok(())
    })?;
    Ok(skipped)
}

/// Whether a checkpoint tensor is optimizer state rather than a weight.
pub fn is_optimizer_tensor(name: &str) -> bool {
    name.starts_with(OPTIM_PREFIX)
}
