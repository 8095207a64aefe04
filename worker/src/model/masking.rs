//! MAE's per-sample random masking (`random_masking` in models_mae.py): sort
//! uniform noise, keep the patches with the smallest noise. The noise comes from
//! the caller (the trainer's own seeded generator), so a run's masks depend only
//! on its seed, not on how many draws torch's generator made elsewhere.

use rand::Rng;
use tch::{Device, Kind, Tensor};

/// Patches the encoder keeps out of `num_patches` at `mask_ratio`:
/// floor(N * (1 - ratio)).
pub fn len_keep(num_patches: i64, mask_ratio: f64) -> i64 {
    (num_patches as f64 * (1.0 - mask_ratio)).floor() as i64
}

/// Uniform noise [B, L] for [`random_masking`], drawn from `rng`.
pub fn masking_noise(rng: &mut impl Rng, batch: i64, num_patches: i64, device: Device) -> Tensor {
    let v: Vec<f32> = (0..batch * num_patches)
        .map(|_| rng.r#gen::<f32>())
        .collect();
    Tensor::from_slice(&v)
        .view([batch, num_patches])
        .to_device(device)
}

/// The result of masking a token sequence.
#[derive(Debug)]
pub struct Masked {
    /// The kept tokens, [B, L_keep, D].
    pub x: Tensor,
    /// 0 for kept, 1 for removed patches, in grid order, [B, L].
    pub mask: Tensor,
    /// The permutation that puts shuffled tokens back in grid order, [B, L].
    pub ids_restore: Tensor,
    /// The grid index of each kept token, [B, L_keep].
    pub ids_keep: Tensor,
}

/// Keep floor(L (1 - ratio)) tokens of `x` [B, L, D] per sample: those with the
/// smallest `noise` [B, L].
pub fn random_masking(x: &Tensor, mask_ratio: f64, noise: &Tensor) -> Masked {
    let (b, l, d) = x.size3().unwrap_or((0, 0, 0));
    let keep = len_keep(l, mask_ratio);
    let ids_shuffle = noise.argsort(1, false); // [B, L] ascending: small noise is kept
    let ids_restore = ids_shuffle.argsort(1, false); // [B, L]
    let ids_keep = ids_shuffle.narrow(1, 0, keep); // [B, L_keep]
    let x_masked = x.gather(
        1,
        &ids_keep.unsqueeze(-1).expand([b, keep, d], false),
        false,
    );
    let mask = Tensor::ones([b, l], (Kind::Float, x.device()));
    let _ = mask.narrow(1, 0, keep).fill_(0.0);
    let mask = mask.gather(1, &ids_restore, false); // [B, L] in grid order
    Masked {
        x: x_masked,
        mask,
        ids_restore,
        ids_keep,
    }
}
