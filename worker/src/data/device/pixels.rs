//! RandomResizedCrop's resampling, the flip and normalisation of a whole
//! batch in one `grid_sampler_2d` call.
//!
//! The sampling grid is the CPU loader's ([`crate::data::augment`]): output
//! pixel `o` of an axis reads source coordinate
//! `start + clamp((o + 0.5) * len / out - 0.5, 0, len - 1)` (half-pixel
//! centres, as PIL and `F.interpolate(align_corners=False)`; the clamp keeps
//! samples inside the crop), bilinearly. A flip reverses the x coordinates.

use tch::{Kind, Tensor};

use super::set::Normalise;

/// Interpolation and padding codes of `grid_sampler_2d`.
const BILINEAR: i64 = 0;
const BORDER: i64 = 1;

/// Crop, resize back to full size, flip and normalise a batch.
///
/// `images`: `[B, C, H, W]` u8. `crops`: `[B, 4]` f32 (top, left, height,
/// width in pixels). `flip`: `[B]` bool. Returns `[B, C, H, W]` f32.
pub fn crop_flip_normalise(
    images: &Tensor,
    crops: &Tensor,
    flip: &Tensor,
    normalise: &Normalise,
) -> Tensor {
    let size = images.size();
    let (b, h, w) = (size[0], size[2], size[3]);
    let column = |i: i64| crops.select(1, i);
    let ys = sample_coords(&column(0), &column(2), h);
    let xs = sample_coords(&column(1), &column(3), w);
    let xs = xs.flip([1]).where_self(&flip.unsqueeze(1), &xs);
    // Pixel coordinate p is grid value (2p + 1) / size - 1 at align_corners=False.
    let gx = ((xs * 2.0 + 1.0) / w as f64 - 1.0)
        .unsqueeze(1)
        .expand([b, h, w], false);
    let gy = ((ys * 2.0 + 1.0) / h as f64 - 1.0)
        .unsqueeze(2)
        .expand([b, h, w], false);
    let grid = Tensor::stack(&[gx, gy], 3);
    images
        .to_kind(Kind::Float)
        .grid_sampler_2d(&grid, BILINEAR, BORDER, false)
        * &normalise.scale
        - &normalise.shift
}

/// `[B, out]` source coordinates along one axis for crops starting at
/// `start` (`[B]`) of length `len` (`[B]`).
fn sample_coords(start: &Tensor, len: &Tensor, out: i64) -> Tensor {
    let o = Tensor::arange(out, (Kind::Float, start.device())).unsqueeze(0);
    let len = len.unsqueeze(1);
    let s = ((o + 0.5) * (&len / out as f64) - 0.5)
        .clamp_min(0.0)
        .minimum(&(&len - 1.0));
    s + start.unsqueeze(1)
}
