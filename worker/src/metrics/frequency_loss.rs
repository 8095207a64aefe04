//! The frequency-aware pretraining loss: MAE's pixel loss plus `lambda` times
//! a high-frequency *energy-matching* term over the masked patches: per patch,
//! Haar sub-band (LH, HL, HH) and channel, the squared difference between the
//! RMS of the predicted coefficients and the RMS of the target's.
//!
//! Why energy and not the coefficients: when MAE cannot know where an edge in
//! a masked patch goes, any loss on the coefficients themselves, like the
//! pixel MSE (Haar is orthonormal, so by Parseval an HF coefficient MSE is just
//! a re-weighted part of the pixel MSE), is smallest for the mean of the
//! possible edges: no edge at all, a blur. Measured: a coefficient MSE term
//! left the reconstructions' HF energy ratio no higher than plain MAE's
//! (docs/wave-mae.md). This term is smallest only when the prediction carries
//! as much detail as the target, wherever it puts it, so it pushes against
//! blur while the pixel term keeps the detail where the evidence says.
//! Works on the patch rows the decoder predicts, so it composes with
//! norm_pix_loss (the per-patch normalisation is applied to the target first).

use tch::Tensor;

use super::MetricsError;
use crate::model::wave::Haar;

/// Keeps the RMS differentiable for a sub-band with no energy at all.
const RMS_EPS: f64 = 1e-8;

/// Pixel loss + `weight` * HF energy-matching term, over masked patches.
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

    /// The HF energy-matching term: per masked patch, the mean over sub-bands
    /// (LH, HL, HH) and channels of (RMS of the predicted coefficients - RMS of
    /// the target's)^2, averaged over masked patches. Same shapes as
    /// [`Self::pixel`]. A scalar; 0 when the prediction has the target's detail
    /// energy in every sub-band, even with that detail elsewhere in the patch.
    pub fn high_frequency(&self, pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
        let size = pred.size();
        let (b, l) = (size[0], size[1]);
        let (p, c) = (self.patch, self.chans);
        let kind = pred.kind();
        // [B, L, p*p*C] -> [B*L, C, p, p] -> HF [B*L, 3C, p/2, p/2] -> RMS [B*L, 3C]
        let rms = |x: &Tensor| {
            let img = x.reshape([b * l, p, p, c]).permute([0, 3, 1, 2]);
            (self
                .haar
                .high(&img)
                .square()
                .mean_dim([-2i64, -1].as_slice(), false, kind)
                + RMS_EPS)
                .sqrt()
        };
        let per_patch = (rms(pred) - rms(target))
            .square()
            .reshape([b, l, -1])
            .mean_dim(-1, false, kind); // [B, L]
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
