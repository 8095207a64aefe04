//! The masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision
//! Learners", <https://arxiv.org/abs/2111.06377>; models_mae.py): an encoder over
//! the visible patches plus cls, a light decoder over the whole grid with mask
//! tokens, and a per-patch pixel loss on the masked patches only.

use tch::{Kind, Tensor, nn};

use super::ModelError;
use super::block::{AttnKind, Block, BlockConfig, TokenLayout};
use super::encoder::Encoder;
use super::layers::{LayerNorm, Linear};
use super::masking::{Masked, random_masking};
use super::patchify::{patchify, unpatchify};
use super::pos_embed::sincos_2d_tensor;
use crate::metrics::FrequencyLoss;
use maelab_core::config::ModelShape;

/// What a pretraining model needs besides its shape.
#[derive(Debug, Clone)]
pub struct MaeConfig {
    pub shape: ModelShape,
    pub norm_pix_loss: bool,
    pub encoder_attn: AttnKind,
    pub decoder_attn: AttnKind,
}

/// The result of one forward pass.
#[derive(Debug)]
pub struct MaeOutput {
    /// Mean squared error over the masked patches, a scalar (fp32).
    pub loss: Tensor,
    /// Predicted pixels per patch, [B, L, p*p*3].
    pub pred: Tensor,
    /// 0 keep, 1 removed, [B, L].
    pub mask: Tensor,
}

#[derive(Debug)]
pub struct Mae {
    encoder: Encoder,
    norm: LayerNorm,
    decoder_embed: Linear,
    mask_token: Tensor,
    decoder_pos_embed: Tensor,
    decoder_blocks: Vec<Block>,
    decoder_norm: LayerNorm,
    decoder_pred: Linear,
    patch: i64,
    chans: i64,
    norm_pix_loss: bool,
    /// The frequency-aware loss term (ml.md, "Wave-MAE"), off by default.
    frequency_loss: Option<FrequencyLoss>,
}

impl Mae {
    /// Build under `p` (the VarStore root, so names match the official ones).
    pub fn new(p: &nn::Path, cfg: &MaeConfig) -> Result<Self, ModelError> {
        let s = &cfg.shape;
        let encoder = Encoder::new(p, s, 0.0, cfg.encoder_attn)?;
        let dim = i64::from(s.embed_dim);
        let dec = i64::from(s.decoder_embed_dim);
        if dec % 4 != 0 {
            return Err(ModelError::Shape(format!(
                "decoder_embed_dim {dec} must be divisible by 4 for 2-D sin-cos position embeddings"
            )));
        }
        let patch = i64::from(s.patch_size);
        let chans = i64::from(s.in_chans);
        let grid = encoder.grid;
        let decoder_blocks = (0..i64::from(s.decoder_depth))
            .map(|i| {
                let cfg = BlockConfig {
                    dim: dec,
                    num_heads: i64::from(s.decoder_num_heads),
                    mlp_ratio: s.mlp_ratio,
                    drop_path: 0.0,
                    attn: cfg.decoder_attn,
                };
                Block::new(p / "decoder_blocks" / i, &cfg)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            norm: LayerNorm::new(p / "norm", dim),
            decoder_embed: Linear::new(p / "decoder_embed", dim, dec),
            mask_token: p.var(
                "mask_token",
                &[1, 1, dec],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            decoder_pos_embed: p.add(
                "decoder_pos_embed",
                sincos_2d_tensor(dec, grid, p.device()),
                false,
            ),
            decoder_blocks,
            decoder_norm: LayerNorm::new(p / "decoder_norm", dec),
            decoder_pred: Linear::new(p / "decoder_pred", dec, patch * patch * chans),
            encoder,
            patch,
            chans,
            norm_pix_loss: cfg.norm_pix_loss,
            frequency_loss: None,
        })
    }

    /// Add `weight` times the Haar high-frequency energy-matching term over
    /// masked patches (`crate::metrics::FrequencyLoss`) to the pixel loss
    /// (`hf_loss_weight`); 0 leaves the loss as is.
    pub fn with_hf_loss(mut self, weight: f64) -> Result<Self, ModelError> {
        self.frequency_loss = if weight > 0.0 {
            let fl = FrequencyLoss::new(self.patch, self.chans, weight, self.mask_token.device())
                .map_err(|e| ModelError::Shape(e.to_string()))?;
            Some(fl)
        } else {
            None
        };
        Ok(self)
    }

    pub fn patch_size(&self) -> i64 {
        self.patch
    }

    /// [B, C, H, W] -> [B, L, p*p*C]
    pub fn patchify(&self, imgs: &Tensor) -> Tensor {
        patchify(imgs, self.patch)
    }

    /// [B, L, p*p*C] -> [B, C, H, W]
    pub fn unpatchify(&self, x: &Tensor) -> Tensor {
        unpatchify(x, self.patch, self.chans)
    }

    /// Encode the visible patches: imgs [B, C, H, W], noise [B, L] ->
    /// (latent [B, 1 + L_keep, D], mask [B, L], ids_restore [B, L]).
    pub fn forward_encoder(
        &self,
        imgs: &Tensor,
        mask_ratio: f64,
        noise: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor, Tensor) {
        let x = self.encoder.embed(imgs); // [B, L, D]
        let Masked {
            x,
            mask,
            ids_restore,
            ids_keep,
        } = random_masking(&x, mask_ratio, noise); // [B, L_keep, D]
        let x = self.encoder.prepend_cls(&x); // [B, 1 + L_keep, D]
        let x = self.encoder.blocks(x, Some(&ids_keep), train);
        (self.norm.forward(&x), mask, ids_restore)
    }

    /// Decode to pixels: latent [B, 1 + L_keep, D], ids_restore [B, L] -> [B, L, p*p*C].
    pub fn forward_decoder(&self, latent: &Tensor, ids_restore: &Tensor, train: bool) -> Tensor {
        let x = self.decoder_embed.forward(latent); // [B, 1 + L_keep, Dd]
        let (b, n, d) = x.size3().unwrap_or((0, 0, 0));
        let l = ids_restore.size()[1];
        let mask_tokens = self
            .mask_token
            .to_kind(x.kind())
            .expand([b, l + 1 - n, d], false);
        let x_ = Tensor::cat(&[x.narrow(1, 1, n - 1), mask_tokens], 1); // [B, L, Dd] shuffled
        let x_ = x_.gather(
            1,
            &ids_restore.unsqueeze(-1).expand([b, l, d], false),
            false,
        ); // grid order
        let x = Tensor::cat(&[x.narrow(1, 0, 1), x_], 1) + self.decoder_pos_embed.to_kind(x.kind()); // [B, 1 + L, Dd]
        let grid = self.encoder.grid;
        let layout = TokenLayout {
            grid: (grid, grid),
            prefix_tokens: 1,
            ids_keep: None,
        };
        let x = self
            .decoder_blocks
            .iter()
            .fold(x, |x, blk| blk.forward(&x, &layout, train));
        let x = self.decoder_pred.forward(&self.decoder_norm.forward(&x)); // [B, 1 + L, p*p*C]
        x.narrow(1, 1, l)
    }

    /// The regression target per patch: pixels, normalised per patch by its own
    /// mean and sqrt(var + 1e-6) (unbiased var, as torch's default) when
    /// norm_pix_loss is on. [B, C, H, W] -> [B, L, p*p*C].
    pub fn loss_target(&self, imgs: &Tensor) -> Tensor {
        let target = self.patchify(&imgs.to_kind(Kind::Float));
        if !self.norm_pix_loss {
            return target;
        }
        let mean = target.mean_dim(-1, true, Kind::Float);
        let var = target.var_dim(-1, true, true);
        (target - mean) / (var + 1e-6).sqrt()
    }

    /// Mean squared error per patch, averaged over removed patches:
    /// imgs [B, C, H, W], pred [B, L, p*p*C], mask [B, L] -> scalar.
    pub fn forward_loss(&self, imgs: &Tensor, pred: &Tensor, mask: &Tensor) -> Tensor {
        let target = self.loss_target(imgs);
        let pred = pred.to_kind(Kind::Float);
        match &self.frequency_loss {
            Some(fl) => fl.loss(&pred, &target, mask),
            None => {
                let loss = (pred - target).square().mean_dim(-1, false, Kind::Float); // [B, L]
                (loss * mask).sum(Kind::Float) / mask.sum(Kind::Float)
            }
        }
    }

    pub fn forward(
        &self,
        imgs: &Tensor,
        mask_ratio: f64,
        noise: &Tensor,
        train: bool,
    ) -> MaeOutput {
        let (latent, mask, ids_restore) = self.forward_encoder(imgs, mask_ratio, noise, train);
        let pred = self.forward_decoder(&latent, &ids_restore, train);
        let loss = self.forward_loss(imgs, &pred, &mask);
        MaeOutput { loss, pred, mask }
    }
}
