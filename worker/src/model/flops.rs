//! The weight matmuls of one training step and their FLOPs, from the run
//! config: what `maelab-worker bench` divides by the machine's matmul rate,
//! and the shapes it replays alone to measure the rate those matmuls can
//! reach (`crate::train::matmul_limit::shape_rate`).
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

/// `count` identical layers `[in_dim] -> [out_dim]`, each applied to `tokens`
/// tokens of every image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightMatmul {
    pub name: &'static str,
    pub tokens: i64,
    pub in_dim: i64,
    pub out_dim: i64,
    pub count: i64,
}

impl WeightMatmul {
    /// Forward + backward FLOPs of these layers for one image.
    pub fn train_flops_per_image(&self) -> f64 {
        3.0 * 2.0 * (self.count * self.tokens * self.in_dim * self.out_dim) as f64
    }
}

/// The weight matmuls of a block, named by the layer group they share in the
/// model's variables ("blocks.3.attn.qkv.weight" is "blocks.qkv").
const ENCODER_BLOCKS: [&str; 4] = ["blocks.qkv", "blocks.proj", "blocks.fc1", "blocks.fc2"];
const DECODER_BLOCKS: [&str; 4] = [
    "decoder_blocks.qkv",
    "decoder_blocks.proj",
    "decoder_blocks.fc1",
    "decoder_blocks.fc2",
];

/// The four weight matmuls of `count` pre-norm blocks of width `dim` over
/// `tokens` tokens: qkv (D x 3D), proj (D x D), fc1 and fc2 (D x hidden).
fn blocks(
    prefix: [&'static str; 4],
    tokens: i64,
    dim: i64,
    mlp_ratio: f64,
    count: i64,
) -> [WeightMatmul; 4] {
    let hidden = (dim as f64 * mlp_ratio).floor() as i64;
    let m = |name, in_dim, out_dim| WeightMatmul {
        name,
        tokens,
        in_dim,
        out_dim,
        count,
    };
    [
        m(prefix[0], dim, 3 * dim),
        m(prefix[1], dim, dim),
        m(prefix[2], dim, hidden),
        m(prefix[3], hidden, dim),
    ]
}

/// Every weight matmul of one training step of `config`; `None` for
/// Wave-MAE, whose wavelet attention is not counted here.
pub fn weight_matmuls(config: &RunConfig) -> Option<Vec<WeightMatmul>> {
    if config.model != ModelKind::Mae {
        return None;
    }
    let s = &config.shape;
    let l = i64::from(s.num_patches());
    let dim = i64::from(s.embed_dim);
    let pixels = i64::from(s.patch_size * s.patch_size * s.in_chans);
    let depth = i64::from(s.depth);
    let one = |name, tokens, in_dim, out_dim| WeightMatmul {
        name,
        tokens,
        in_dim,
        out_dim,
        count: 1,
    };
    let mut all = vec![one("patch_embed", l, pixels, dim)];
    match config.kind {
        RunKind::Pretrain => {
            let enc_tokens = 1 + len_keep(l, config.mask_ratio);
            let dec = i64::from(s.decoder_embed_dim);
            let dec_tokens = 1 + l;
            all.extend(blocks(ENCODER_BLOCKS, enc_tokens, dim, s.mlp_ratio, depth));
            all.push(one("decoder_embed", enc_tokens, dim, dec));
            let dec_depth = i64::from(s.decoder_depth);
            all.extend(blocks(
                DECODER_BLOCKS,
                dec_tokens,
                dec,
                s.mlp_ratio,
                dec_depth,
            ));
            all.push(one("decoder_pred", dec_tokens, dec, pixels));
        }
        RunKind::Finetune => {
            all.extend(blocks(ENCODER_BLOCKS, 1 + l, dim, s.mlp_ratio, depth));
            // On the pooled token.
            all.push(one("head", 1, dim, i64::from(s.num_classes)));
        }
    }
    Some(all)
}

/// FLOPs of one image's forward and backward pass (3x the forward's matmul
/// FLOPs) for `config`; `None` where [`weight_matmuls`] is.
pub fn train_flops_per_image(config: &RunConfig) -> Option<f64> {
    weight_matmuls(config).map(|all| all.iter().map(WeightMatmul::train_flops_per_image).sum())
}
