//! Reconstruction quality beyond the loss: sharpness metrics logged every
//! pretraining epoch and the frequency-aware loss, both built on the Haar
//! wavelet transform (ml.md, "Wave-MAE": the study's complaint was blurry
//! reconstructions, so maelab measures blur instead of eyeballing it).

pub mod frequency_loss;
pub mod sharpness;

pub use frequency_loss::FrequencyLoss;
pub use sharpness::{Sharpness, sharpness};

/// Inputs the metrics cannot be computed on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "the Haar metrics need an even patch size (2x2 Haar blocks inside each patch), got {patch}"
    )]
    OddPatch { patch: i64 },
    #[error("{what}: expected {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<i64>,
    },
    #[error("no masked patch to measure")]
    NoMaskedPatches,
    #[error(
        "the originals have no high-frequency energy in the masked patches, so the ratio is undefined"
    )]
    FlatOriginal,
}
