//! Mixup / cutmix of a batch on its device: [`crate::data::mixup::apply_mix`]
//! as tensor ops (each image mixed with its mirror in the batch).

use tch::Tensor;

use crate::data::mixup::Mix;

/// Do `mix` (drawn by [`crate::data::mixup::sample_mix`]) to `[B, C, H, W]`
/// images: paste the mirrored batch's box, or blend with it at `lam`.
pub fn apply_mix(images: &Tensor, mix: &Mix) -> Tensor {
    let partner = images.flip([0]);
    match mix.cutmix_box {
        Some((top, bottom, left, right)) => {
            let out = images.copy();
            let (rows, cols) = ((bottom - top) as i64, (right - left) as i64);
            let region = |t: &Tensor| t.narrow(2, top as i64, rows).narrow(3, left as i64, cols);
            let mut pasted = region(&out);
            pasted.copy_(&region(&partner));
            out
        }
        None if mix.lam == 1.0 => images.shallow_clone(),
        // The CPU path's f32 weights (torch multiplies a float tensor by
        // its scalar in f32): v * lam + o * (1 - lam).
        None => {
            let (a, b) = (mix.lam as f32, (1.0 - mix.lam) as f32);
            images * f64::from(a) + partner * f64::from(b)
        }
    }
}
