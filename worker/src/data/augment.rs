//! Per-image augmentation on CPU: RandomResizedCrop + horizontal flip
//! (torchvision's, as MAE's main_pretrain.py uses it), normalisation, and
//! timm's RandomErasing in 'pixel' mode (MAE's main_finetune.py).
//!
//! Images go from u8 HWC to normalised f32 CHW in one pass: the crop is
//! resampled bilinearly straight into the output.

use rand::Rng;

use super::dataset::Dataset;
use super::rng::standard_normal;
use super::{CIFAR10_MEAN, CIFAR10_STD};

/// The aspect-ratio range of RandomResizedCrop (torchvision's default).
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
/// Pretraining crop scale (MAE main_pretrain.py).
pub const PRETRAIN_CROP_SCALE: (f64, f64) = (0.2, 1.0);
/// Finetuning crop scale for 32x32 images. MAE finetunes ImageNet with
/// timm's default (0.08, 1) at 224 pixels; at 32 pixels an 8% crop is a 9x9
/// patch blown up 3.5x, mostly interpolation blur with little of the object
/// left, so the label often no longer matches what is visible. 0.35 keeps at
/// least a 19x19 region (a third of the image), enough of the object for the
/// label to hold, while still varying scale and position.
pub const FINETUNE_CROP_SCALE: (f64, f64) = (0.35, 1.0);

/// A crop rectangle inside the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Crop {
    /// The whole image.
    pub fn full(height: usize, width: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height,
            width,
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries at a random
/// area and aspect ratio, then a central crop with the ratio clamped.
pub fn random_resized_crop(
    rng: &mut impl Rng,
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> Crop {
    let area = (height * width) as f64;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return Crop {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        (((width as f64) / ratio.0).round() as usize, width)
    } else if in_ratio > ratio.1 {
        (height, ((height as f64) * ratio.1).round() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height), w.clamp(1, width));
    Crop {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// `[lo, hi)` uniform, tolerating `lo == hi`.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.r#gen::<f64>()
}

/// Resample `crop` of an HWC u8 image to the full `height x width` with
/// bilinear interpolation (half-pixel centres, as PIL and
/// `F.interpolate(align_corners=False)`), optionally mirrored, then normalise
/// into `out` as CHW f32.
pub fn resized_crop_normalised(
    src: &[u8],
    height: usize,
    width: usize,
    crop: Crop,
    flip: bool,
    out: &mut [f32],
) {
    let ys = axis_weights(crop.top, crop.height, height);
    let xs = axis_weights(crop.left, crop.width, width);
    let plane = height * width;
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * CIFAR10_STD[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| CIFAR10_MEAN[c] / CIFAR10_STD[c]);
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            let dst_x = if flip { width - 1 - ox } else { ox };
            let at = |y: usize, x: usize, c: usize| f32::from(src[(y * width + x) * 3 + c]);
            for c in 0..3 {
                let top = at(y0, x0, c) * (1.0 - fx) + at(y0, x1, c) * fx;
                let bottom = at(y1, x0, c) * (1.0 - fx) + at(y1, x1, c) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[c * plane + oy * width + dst_x] = v * scale[c] - shift[c];
            }
        }
    }
}

/// For each output coordinate along one axis: the two source coordinates
/// and the weight of the second.
fn axis_weights(start: usize, len: usize, out_len: usize) -> Vec<(usize, usize, f32)> {
    let step = len as f64 / out_len as f64;
    (0..out_len)
        .map(|o| {
            let s = ((o as f64 + 0.5) * step - 0.5).clamp(0.0, (len - 1) as f64);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(len - 1);
            (start + i0, start + i1, (s - i0 as f64) as f32)
        })
        .collect()
}

/// Image `index` of `ds`, normalised, no augmentation, into `out` (CHW).
pub fn normalised(ds: &Dataset, index: usize, out: &mut [f32]) {
    resized_crop_normalised(
        ds.image(index),
        ds.height,
        ds.width,
        Crop::full(ds.height, ds.width),
        false,
        out,
    );
}

/// timm's `RandomErasing(mode='pixel', min_area=0.02, max_area=1/3,
/// min_aspect=0.3, count=1)` on a normalised CHW image: with probability
/// `prob`, one rectangle is filled with standard-normal noise per pixel and
/// channel. Returns whether it erased.
pub fn random_erase(
    rng: &mut impl Rng,
    img: &mut [f32],
    height: usize,
    width: usize,
    prob: f64,
) -> bool {
    let Some(rect) = erase_box(rng, height, width, prob) else {
        return false;
    };
    fill_noise(rng, img, height, width, rect);
    true
}

/// Fill `rect` of a CHW image with standard-normal noise, channel by channel,
/// row by row.
pub fn fill_noise(rng: &mut impl Rng, img: &mut [f32], height: usize, width: usize, rect: Crop) {
    let plane = height * width;
    for c in 0..img.len() / plane {
        for y in rect.top..rect.top + rect.height {
            for x in rect.left..rect.left + rect.width {
                img[c * plane + y * width + x] = standard_normal(rng) as f32;
            }
        }
    }
}

/// The rectangle [`random_erase`] fills, drawn as timm draws it: with
/// probability `prob`, up to 10 tries at an area in [2%, 1/3] of the image
/// and a log-uniform aspect in [0.3, 1/0.3]; `None` when it does not erase.
/// (A try may round to an empty rectangle, as in timm.)
pub fn erase_box(rng: &mut impl Rng, height: usize, width: usize, prob: f64) -> Option<Crop> {
    const MIN_AREA: f64 = 0.02;
    const MAX_AREA: f64 = 1.0 / 3.0;
    const MIN_ASPECT: f64 = 0.3;
    if prob <= 0.0 || rng.r#gen::<f64>() > prob {
        return None;
    }
    let area = (height * width) as f64;
    let log_aspect = (MIN_ASPECT.ln(), (1.0 / MIN_ASPECT).ln());
    for _ in 0..10 {
        let target_area = uniform(rng, MIN_AREA, MAX_AREA) * area;
        let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
        let h = (target_area * aspect).sqrt().round() as usize;
        let w = (target_area / aspect).sqrt().round() as usize;
        if w < width && h < height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return Some(Crop {
                top,
                left,
                height: h,
                width: w,
            });
        }
    }
    None
}
