//! Matmul FLOPs of one training image, from the run config: what
//! `maelab-worker bench` divides by the machine's matmul rate.
//!
//! The count: every weight matmul the model runs (the patch embedding as the
//! [p*p*C, D] matmul it is, each block's qkv, proj, fc1 and fc2, the MAE's
//! decoder_embed and decoder_pred, the classifier's head), 2 FLOPs per
//! multiply-add, over the tokens each layer sees (pretraining: the encoder
//! sees cls + the kept patches, the decoder cls + all patches). Training is
//! 3x the forward pass (the backward computes the input and the weight
//! gradient, one matmul each). Not counted: attention's QK^T and AV (4% more in
//! pretraining and 6% in finetuning at vit-tiny/4), elementwise work, and the
//! patch embedding's unneeded input gradient. The fraction of the matmul limit
//! is therefore a lower bound.

use maelab_core::config::{ModelKind, RunConfig, RunKind};

use super::masking::len_keep;

/// Multiply-adds of one pre-norm block per token: qkv (D x 3D), proj (D x D),
/// fc1 and fc2 (D x hidden each).
fn block_macs_per_token(dim: f64, mlp_ratio: f64) -> f64 {
    let hidden = (dim * mlp_ratio).floor();
    4.0 * dim * dim + 2.0 * dim * hidden
}

/// FLOPs of one image's forward and backward pass (3x the forward's matmul
/// FLOPs) for `config`; `None` for Wave-MAE, whose wavelet attention is not
/// counted here.
pub fn train_flops_per_image(config: &RunConfig) -> Option<f64> {
    if config.model != ModelKind::Mae {
        return None;
    }
    let s = &config.shape;
    let l = f64::from(s.num_patches());
    let dim = f64::from(s.embed_dim);
    let pixels = f64::from(s.patch_size * s.patch_size * s.in_chans);
    let patch_embed = l * pixels * dim;
    let depth = f64::from(s.depth);
    let macs = match config.kind {
        RunKind::Pretrain => {
            let enc_tokens = 1.0 + len_keep(i64::from(s.num_patches()), config.mask_ratio) as f64;
            let dec = f64::from(s.decoder_embed_dim);
            let dec_tokens = 1.0 + l;
            patch_embed
                + depth * enc_tokens * block_macs_per_token(dim, s.mlp_ratio)
                + enc_tokens * dim * dec // decoder_embed
                + f64::from(s.decoder_depth) * dec_tokens * block_macs_per_token(dec, s.mlp_ratio)
                + dec_tokens * dec * pixels // decoder_pred
        }
        RunKind::Finetune => {
            patch_embed
                + depth * (1.0 + l) * block_macs_per_token(dim, s.mlp_ratio)
                + dim * f64::from(s.num_classes) // head, on the pooled token
        }
    };
    Some(3.0 * 2.0 * macs)
}
