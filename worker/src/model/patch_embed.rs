//! Patch embedding: a convolution with kernel = stride = patch size, so each
//! patch becomes one token (timm `PatchEmbed`, parameters `patch_embed.proj`).

use tch::{Tensor, nn};

use super::init::xavier_uniform;

#[derive(Debug)]
pub struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
    patch: i64,
}

impl PatchEmbed {
    pub fn new(p: nn::Path, in_chans: i64, patch: i64, dim: i64) -> Self {
        let p = p / "proj";
        let fan_in = in_chans * patch * patch;
        // Official: xavier_uniform_ on the weight viewed as [dim, in*k*k].
        let weight = p.var(
            "weight",
            &[dim, in_chans, patch, patch],
            xavier_uniform(fan_in, dim),
        );
        // Conv's own default bias init (the official code leaves it).
        let bound = 1.0 / (fan_in as f64).sqrt();
        let bias = p.var(
            "bias",
            &[dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        Self {
            weight,
            bias,
            patch,
        }
    }

    /// [B, C, H, W] -> [B, L, D] with L = (H/p)(W/p), row-major over the grid.
    pub fn forward(&self, imgs: &Tensor) -> Tensor {
        let k = imgs.kind();
        let (w, b) = if k == self.weight.kind() {
            (self.weight.shallow_clone(), self.bias.shallow_clone())
        } else {
            (self.weight.to_kind(k), self.bias.to_kind(k))
        };
        imgs.conv2d(&w, Some(&b), [self.patch, self.patch], [0, 0], [1, 1], 1)
            .flatten(2, 3) // [B, D, L]
            .transpose(1, 2) // [B, L, D]
    }
}
