//! The per-epoch picture of a pretraining run: for a fixed set of test images,
//! one row each of original | masked | reconstruction | reconstruction with the
//! visible patches pasted back, un-normalised and upscaled (nearest) so a
//! person can see 32x32 images.

use std::io::Cursor;

use tch::{Kind, Tensor};

use crate::data::{CIFAR10_MEAN, CIFAR10_STD};
use crate::model::Mae;
use crate::model::patchify::{patchify, unpatchify};

/// How many test images the picture shows.
pub const RECON_IMAGES: usize = 8;
/// Nearest-neighbour upscaling factor.
pub const UPSCALE: i64 = 4;

/// The four panels of each row, [B, 3, H, W] each, pixel values in [0, 1].
#[derive(Debug)]
pub struct Reconstruction {
    pub original: Tensor,
    pub masked: Tensor,
    pub reconstruction: Tensor,
    pub pasted: Tensor,
    /// 1 for removed patches, [B, L].
    pub mask: Tensor,
}

fn unnormalise(x: &Tensor) -> Tensor {
    let dev = x.device();
    let mean = Tensor::from_slice(&CIFAR10_MEAN)
        .view([1, 3, 1, 1])
        .to_device(dev);
    let std = Tensor::from_slice(&CIFAR10_STD)
        .view([1, 3, 1, 1])
        .to_device(dev);
    (x * std + mean).clamp(0.0, 1.0)
}

/// Reconstruct normalised `imgs` [B, 3, H, W] with masking `noise` [B, L].
pub fn reconstruct(
    mae: &Mae,
    imgs: &Tensor,
    mask_ratio: f64,
    noise: &Tensor,
    norm_pix_loss: bool,
) -> Reconstruction {
    tch::no_grad(|| {
        let imgs = imgs.to_kind(Kind::Float);
        let out = mae.forward(&imgs, mask_ratio, noise, false);
        let p = mae.patch_size();
        let mut pred = out.pred.to_kind(Kind::Float); // [B, L, p*p*3]
        if norm_pix_loss {
            // The model predicts per-patch normalised pixels: undo with the
            // original patch's statistics, as the loss target was built.
            let target = patchify(&imgs, p);
            let mean = target.mean_dim(-1, true, Kind::Float);
            let var = target.var_dim(-1, true, true);
            pred = pred * (var + 1e-6).sqrt() + mean;
        }
        let recon = unpatchify(&pred, p, 3);
        let (_, l, d) = pred.size3().unwrap_or((0, 0, 0));
        let m = unpatchify(&out.mask.unsqueeze(-1).expand([-1, l, d], false), p, 3); // [B, 3, H, W], 1 removed
        let keep = 1.0 - &m;
        Reconstruction {
            original: unnormalise(&imgs),
            masked: unnormalise(&(&imgs * &keep)),
            reconstruction: unnormalise(&recon),
            pasted: unnormalise(&(&imgs * &keep + &recon * &m)),
            mask: out.mask,
        }
    })
}

/// The PNG of a reconstruction: one row per image, four panels per row.
pub fn to_png(r: &Reconstruction) -> Result<Vec<u8>, image::ImageError> {
    let grid = Tensor::cat(&[&r.original, &r.masked, &r.reconstruction, &r.pasted], 3); // [B, 3, H, 4W]
    let (b, c, h, w) = grid.size4().unwrap_or((0, 0, 0, 0));
    let grid = grid
        .permute([1, 0, 2, 3])
        .reshape([c, b * h, w]) // rows stacked
        .repeat_interleave_self_int(UPSCALE, 1, None)
        .repeat_interleave_self_int(UPSCALE, 2, None)
        .permute([1, 2, 0]) // [H', W', 3]
        .g_mul_scalar(255.0)
        .round()
        .to_kind(Kind::Uint8)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let (height, width) = ((b * h * UPSCALE) as u32, (w * UPSCALE) as u32);
    let pixels: Vec<u8> = Vec::try_from(grid.reshape([-1])).unwrap_or_default();
    let img = image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
        image::ImageError::Parameter(image::error::ParameterError::from_kind(
            image::error::ParameterErrorKind::DimensionMismatch,
        ))
    })?;
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}
