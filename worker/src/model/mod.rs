//! The models of maelab: the MAE (pretraining) and the ViT classifier
//! (finetuning), built from small layers under the official parameter names.

pub mod attention;
pub mod block;
pub mod classifier;
pub mod drop_path;
pub mod encoder;
pub mod flops;
pub mod init;
pub mod layers;
pub mod mae;
pub mod masking;
pub mod mlp;
pub mod patch_embed;
pub mod patchify;
pub mod pos_embed;
pub mod wave;

pub use block::AttnKind;
pub use classifier::Classifier;
pub use mae::{Mae, MaeConfig, MaeOutput};

/// A model that cannot be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Wave(#[from] wave::WaveError),
}

/// Trainable parameter count (what the official `n_parameters` counts).
pub fn n_parameters(vs: &tch::nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
