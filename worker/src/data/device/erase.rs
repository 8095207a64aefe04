//! Random erasing of a batch on its device: each image's rectangle (drawn on
//! the host, [`crate::data::augment::erase_box`]) filled with standard-normal
//! noise, as timm's RandomErasing in 'pixel' mode.
//!
//! The noise comes from a counter-based generator in tensor ops (a 32-bit
//! integer hash of the element's index and a per-batch key, then the inverse
//! normal CDF), not from torch's global generator: batches depend only on the
//! run's seed, whatever else draws from torch meanwhile, and nothing per pixel
//! crosses from the host.

use tch::{Device, Kind, Tensor};

/// Fill each image's rectangle with noise.
///
/// `images`: `[B, C, H, W]` f32. `rects`: `[B, 4]` f32 (top, left, height,
/// width). `on`: `[B]` bool, whether the image is erased. `key` picks the
/// noise (one per batch).
pub fn erase(images: &Tensor, rects: &Tensor, on: &Tensor, key: u32) -> Tensor {
    let size = images.size();
    let (h, w) = (size[2], size[3]);
    let device = images.device();
    let y = Tensor::arange(h, (Kind::Float, device)).view([1, h, 1]);
    let x = Tensor::arange(w, (Kind::Float, device)).view([1, 1, w]);
    let column = |i: i64| rects.select(1, i).view([-1, 1, 1]);
    let (top, left, height, width) = (column(0), column(1), column(2), column(3));
    let inside = y
        .greater_equal_tensor(&top)
        .logical_and(&y.less_tensor(&(&top + height)))
        .logical_and(&x.greater_equal_tensor(&left))
        .logical_and(&x.less_tensor(&(&left + width)))
        .logical_and(&on.view([-1, 1, 1]));
    standard_normal(key, &size, device).where_self(&inside.unsqueeze(1), images)
}

/// `shape` f32 standard-normal values for `key`, the same for the same key
/// on any device. Tails end at about ±5.3 (23-bit uniforms).
pub fn standard_normal(key: u32, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let i = Tensor::arange(n, (Kind::Int64, device));
    // Golden-ratio spacing of the indices, offset by the key, then mixed.
    let bits = hash32((mul_mod32(&i, 0x9E37_79B9) + i64::from(key)).bitwise_and(MASK32));
    // 23 bits as the odd numerator of a uniform in (-1, 1), exact in f32.
    let k = bits.bitwise_right_shift_tensor_scalar(9);
    let t = (k * 2 + 1 - (1i64 << 23)).to_kind(Kind::Float) / f64::from(1u32 << 23);
    (t.erfinv() * std::f64::consts::SQRT_2).view(shape)
}

const MASK32: i64 = 0xFFFF_FFFF;

/// Chris Wellons' `lowbias32` integer hash, on int64 tensors holding values
/// in `0..2^32`.
fn hash32(x: Tensor) -> Tensor {
    let x = xorshift(x, 16);
    let x = mul_mod32(&x, 0x7feb_352d);
    let x = xorshift(x, 15);
    let x = mul_mod32(&x, 0x846c_a68b);
    xorshift(x, 16)
}

fn xorshift(x: Tensor, shift: i64) -> Tensor {
    let shifted = x.bitwise_right_shift_tensor_scalar(shift);
    x.bitwise_xor_tensor(&shifted)
}

/// `x * c mod 2^32` for `x` in `0..2^32`, in 16-bit halves of `c` so no
/// int64 product overflows.
fn mul_mod32(x: &Tensor, c: u32) -> Tensor {
    let (hi, lo) = (i64::from(c >> 16), i64::from(c & 0xFFFF));
    let high = (x * hi)
        .bitwise_and(0xFFFF)
        .bitwise_left_shift_tensor_scalar(16);
    (x * lo + high).bitwise_and(MASK32)
}
