//! The finetuning model (timm `VisionTransformer` with `global_pool=True`, as
//! MAE's main_finetune.py builds it): the encoder trunk, the mean of the patch
//! tokens, `fc_norm`, and a linear `head` with trunc-normal(2e-5) weights.

use tch::{Kind, Tensor, nn};

use super::ModelError;
use super::block::AttnKind;
use super::encoder::Encoder;
use super::init::trunc_normal;
use super::layers::{LayerNorm, Linear};
use maelab_core::config::ModelShape;

#[derive(Debug)]
pub struct Classifier {
    encoder: Encoder,
    fc_norm: LayerNorm,
    head: Linear,
}

impl Classifier {
    /// Build under `p` (the VarStore root); `drop_path` is the last block's rate.
    pub fn new(
        p: &nn::Path,
        shape: &ModelShape,
        drop_path: f64,
        attn: AttnKind,
    ) -> Result<Self, ModelError> {
        let encoder = Encoder::new(p, shape, drop_path, attn)?;
        let dim = i64::from(shape.embed_dim);
        let head = Linear::new(p / "head", dim, i64::from(shape.num_classes));
        trunc_normal(&head.weight, 2e-5);
        Ok(Self {
            encoder,
            fc_norm: LayerNorm::new(p / "fc_norm", dim),
            head,
        })
    }

    /// [B, C, H, W] -> logits [B, classes] (fp32).
    pub fn forward(&self, imgs: &Tensor, train: bool) -> Tensor {
        let x = self.encoder.prepend_cls(&self.encoder.embed(imgs)); // [B, 1 + L, D]
        let x = self.encoder.blocks(x, None, train);
        let l = x.size()[1] - 1;
        let pooled = x.narrow(1, 1, l).mean_dim(1, false, None::<Kind>); // [B, D]
        self.head
            .forward(&self.fc_norm.forward(&pooled))
            .to_kind(Kind::Float)
    }
}
