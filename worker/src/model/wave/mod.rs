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

use maelab_core::config::{ModelKind, RunConfig};

use super::AttnKind;

/// The token mixers of the pretraining MAE of `config`, (encoder, decoder):
/// wave attention where `wave_in` puts it, plain attention elsewhere.
pub fn pretrain_attn(config: &RunConfig) -> (AttnKind, AttnKind) {
    let wave = AttnKind::Wave {
        sr: i64::from(config.wave_sr),
    };
    match (config.model, config.wave_in) {
        (ModelKind::WaveMae, Some(w)) => (
            if w.in_encoder() {
                wave
            } else {
                AttnKind::Plain
            },
            if w.in_decoder() {
                wave
            } else {
                AttnKind::Plain
            },
        ),
        _ => (AttnKind::Plain, AttnKind::Plain),
    }
}

/// The classifier's mixer for `config`: the encoder keeps the mixer it was
/// pretrained with (wave attention when `wave_in` is encoder or both), now on
/// the whole grid since finetuning masks nothing. The decoder is dropped, so
/// `wave_in = decoder` finetunes a plain ViT.
pub fn finetune_attn(config: &RunConfig) -> AttnKind {
    pretrain_attn(config).0
}
