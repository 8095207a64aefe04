//! Wave-MAE's building blocks: the Haar wavelet transform and Wave-ViT's
//! wavelet attention (<https://arxiv.org/abs/2207.04978>), which Wave-MAE puts
//! into MAE's encoder, decoder or both (ml.md, "Wave-MAE").

pub mod attention;
pub mod haar;

pub use attention::WaveAttention;
pub use haar::Haar;

/// Shapes wave attention cannot work with, caught when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaveError {
    #[error(
        "wave attention needs a width divisible by 4 (it reduces to C/4 before the DWT), got {dim}"
    )]
    Dim { dim: i64 },
    #[error("wave attention width {dim} does not split into {num_heads} heads")]
    Heads { dim: i64, num_heads: i64 },
    #[error("wave_sr must be at least 1, got {sr}")]
    Sr { sr: i64 },
    #[error("the number of tokens before the grid cannot be negative, got {prefix}")]
    Prefix { prefix: i64 },
    #[error(
        "wave attention needs an even token grid whose half divides by wave_sr {sr}, got {h}x{w}"
    )]
    Grid { h: i64, w: i64, sr: i64 },
}
