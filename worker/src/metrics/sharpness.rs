//! Sharpness of MAE reconstructions, measured on the masked patches only
//! (the visible ones are copied from the input in the pasted reconstruction):
//! - PSNR in dB, `10 log10(peak^2 / MSE)` with the MSE pooled over every
//!   masked pixel of the set;
//! - the high-frequency energy ratio: the energy of the Haar LH, HL and HH
//!   sub-bands of the reconstruction over that of the original. 1.0 is as
//!   sharp as the original; a blurry reconstruction (MAE's known weakness,
//!   <https://arxiv.org/abs/2111.06377>) falls under 1.
//!
//! Patches have an even size, so every 2x2 Haar block lies inside one patch
//! and the sub-bands of a masked patch depend on that patch's pixels alone.

use tch::{Kind, Tensor};

use super::MetricsError;
use crate::model::wave::Haar;

/// The sharpness of a set of reconstructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sharpness {
    /// dB over the masked patches; infinite when they match exactly.
    pub psnr: f64,
    /// HF energy of the reconstructions / of the originals (masked patches).
    pub hf_ratio: f64,
}

/// PSNR and HF ratio of `recon` against `orig` (`[B, C, H, W]`, pixel values
/// with a range of 1.0, e.g. un-normalised and clamped to [0, 1]) over the
/// patches where `mask` (`[B, L]`, 1 = masked, MAE's convention) is set.
pub fn sharpness(
    recon: &Tensor,
    orig: &Tensor,
    mask: &Tensor,
    patch: i64,
) -> Result<Sharpness, MetricsError> {
    Ok(Sharpness {
        psnr: psnr_masked(recon, orig, mask, patch, 1.0)?,
        hf_ratio: hf_ratio_masked(recon, orig, mask, patch)?,
    })
}

/// PSNR over the masked patches, `peak` being the largest pixel value.
pub fn psnr_masked(
    recon: &Tensor,
    orig: &Tensor,
    mask: &Tensor,
    patch: i64,
    peak: f64,
) -> Result<f64, MetricsError> {
    let (r, o, m) = patches_of(recon, orig, mask, patch)?;
    let per_patch = tch::no_grad(|| {
        // [B*L]: summed squared error of each patch
        (&r - &o)
            .square()
            .sum_dim_intlist([1, 2, 3].as_slice(), false, Kind::Double)
    });
    let pixels_per_patch = r.size()[1..].iter().product::<i64>() as f64;
    let masked = f64::try_from(m.sum(Kind::Double)).unwrap_or(0.0);
    let sse = f64::try_from((per_patch * &m).sum(Kind::Double)).unwrap_or(f64::NAN);
    let mse = sse / (masked * pixels_per_patch);
    Ok(if mse > 0.0 {
        10.0 * (peak * peak / mse).log10()
    } else {
        f64::INFINITY
    })
}

/// HF energy (Haar LH + HL + HH) of `recon` over that of `orig`, masked
/// patches only.
pub fn hf_ratio_masked(
    recon: &Tensor,
    orig: &Tensor,
    mask: &Tensor,
    patch: i64,
) -> Result<f64, MetricsError> {
    let (r, o, m) = patches_of(recon, orig, mask, patch)?;
    let haar = Haar::new(r.device());
    let energy = |x: &Tensor| {
        tch::no_grad(|| {
            // [B*L, 3C, p/2, p/2] -> [B*L]
            let e =
                haar.high(x)
                    .square()
                    .sum_dim_intlist([1, 2, 3].as_slice(), false, Kind::Double);
            f64::try_from((e * &m).sum(Kind::Double)).unwrap_or(f64::NAN)
        })
    };
    let (er, eo) = (energy(&r), energy(&o));
    if eo <= 0.0 {
        return Err(MetricsError::FlatOriginal);
    }
    Ok(er / eo)
}

/// Checks shapes and cuts both images into patches: `[B*L, C, p, p]` each,
/// plus the mask as `[B*L]` doubles.
fn patches_of(
    recon: &Tensor,
    orig: &Tensor,
    mask: &Tensor,
    patch: i64,
) -> Result<(Tensor, Tensor, Tensor), MetricsError> {
    if patch <= 0 || patch % 2 != 0 {
        return Err(MetricsError::OddPatch { patch });
    }
    let size = orig.size();
    let &[b, c, h, w] = size.as_slice() else {
        return Err(MetricsError::Shape {
            what: "original",
            expected: "[B, C, H, W]".into(),
            got: size,
        });
    };
    if recon.size() != size {
        return Err(MetricsError::Shape {
            what: "reconstruction",
            expected: format!("{size:?}, the original's shape"),
            got: recon.size(),
        });
    }
    if h % patch != 0 || w % patch != 0 {
        return Err(MetricsError::Shape {
            what: "image",
            expected: format!("a size divisible by the patch size {patch}"),
            got: size,
        });
    }
    let (gh, gw) = (h / patch, w / patch);
    if mask.size() != [b, gh * gw] {
        return Err(MetricsError::Shape {
            what: "mask",
            expected: format!("[{b}, {}]", gh * gw),
            got: mask.size(),
        });
    }
    let m = mask.to_kind(Kind::Double).reshape([b * gh * gw]);
    if f64::try_from(m.sum(Kind::Double)).unwrap_or(0.0) <= 0.0 {
        return Err(MetricsError::NoMaskedPatches);
    }
    let cut = |x: &Tensor| {
        // [B, C, gh, p, gw, p] -> [B, gh, gw, C, p, p] -> [B*L, C, p, p]
        x.reshape([b, c, gh, patch, gw, patch])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b * gh * gw, c, patch, patch])
            .to_kind(Kind::Double)
    };
    Ok((cut(recon), cut(orig), m))
}
