//! The frequency-aware pretraining loss: MAE's pixel loss plus `lambda` times
//! a loss on the Haar high-frequency sub-bands (LH, HL, HH) of the predicted
//! patches against the target patches, both over masked patches only.
//!
//! Haar is orthonormal, so the squared error of the HF sub-bands is part of
//! the pixel squared error (Parseval): the extra term re-weights the error
//! towards edges and texture, which the plain pixel MSE lets MAE blur
//! (<https://arxiv.org/abs/2111.06377> shows the blur; ml.md, "Wave-MAE").
//! Works on the patch rows the decoder predicts, so it composes with
//! norm_pix_loss: the per-patch normalisation is applied to the target first.

use tch::Tensor;

use super::MetricsError;
use crate::model::wave::Haar;

/// Pixel loss + `weight` * HF sub-band loss, over masked patches.
#[derive(Debug)]
pub struct FrequencyLoss {
    patch: i64,
    chans: i64,
    weight: f64,
    haar: Haar,
}

impl FrequencyLoss {
    /// `patch` must be even (each 2x2 Haar block inside one patch).
    pub fn new(
        patch: i64,
        chans: i64,
        weight: f64,
        device: tch::Device,
    ) -> Result<Self, MetricsError> {
        if patch <= 0 || patch % 2 != 0 {
            return Err(MetricsError::OddPatch { patch });
        }
        Ok(Self {
            patch,
            chans,
            weight,
            haar: Haar::new(device),
        })
    }

    /// MAE's loss: per-patch MSE averaged over masked patches. `pred`,
    /// `target`: `[B, L, p*p*C]` (patchify layout: row, col, channel);
    /// `mask`: `[B, L]`, 1 = masked. A scalar.
    pub fn pixel(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        // [B, L]
        let per_patch = (pred - target).square().mean_dim(-1, false, pred.kind());
        masked_mean(&per_patch, mask)
    }

    /// Mean squared error of the LH, HL and HH sub-bands per patch, averaged
    /// over masked patches. Same shapes as [`Self::pixel`]. A scalar.
    pub fn high_frequency(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let size = pred.size();
        let (b, l) = (size[0], size[1]);
        let (p, c) = (self.patch, self.chans);
        // [B, L, p*p*C] -> [B*L, p, p, C] -> [B*L, C, p, p]
        let to_img = |x: &Tensor| x.reshape([b * l, p, p, c]).permute([0, 3, 1, 2]);
        let diff = to_img(pred) - to_img(target);
        // The DWT is linear: HF(pred) - HF(target) = HF(pred - target).
        // [B*L, 3C, p/2, p/2] -> [B, L]
        let per_patch =
            self.haar
                .high(&diff)
                .square()
                .reshape([b, l, -1])
                .mean_dim(-1, false, pred.kind());
        masked_mean(&per_patch, mask)
    }

    /// `pixel + weight * high_frequency`; just the pixel loss when the weight
    /// is 0 (then it costs nothing extra).
    pub fn loss(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let pixel = self.pixel(pred, target, mask);
        if self.weight == 0.0 {
            pixel
        } else {
            pixel + self.high_frequency(pred, target, mask) * self.weight
        }
    }
}

/// `[B, L]` per-patch losses -> their mean over patches where mask is 1.
fn masked_mean(per_patch: &Tensor, mask: &Tensor) -> Tensor {
    let mask = mask.to_kind(per_patch.kind());
    (per_patch * &mask).sum(per_patch.kind()) / mask.sum(per_patch.kind())
}
