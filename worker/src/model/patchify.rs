//! Images to per-patch pixel rows and back (`patchify` / `unpatchify` of
//! models_mae.py); the decoder predicts rows in this layout.

use tch::Tensor;

/// [B, C, H, W] -> [B, L, p*p*C], patches row-major, pixels (row, col, channel).
pub fn patchify(imgs: &Tensor, patch: i64) -> Tensor {
    let (b, c, h, w) = imgs.size4().unwrap_or((0, 0, 0, 0));
    let (gh, gw) = (h / patch, w / patch);
    imgs.reshape([b, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 3, 5, 1]) // [B, gh, gw, p, p, C]
        .reshape([b, gh * gw, patch * patch * c])
}

/// [B, L, p*p*C] -> [B, C, H, W] for a square grid; the inverse of [`patchify`].
pub fn unpatchify(x: &Tensor, patch: i64, chans: i64) -> Tensor {
    let (b, l, _) = x.size3().unwrap_or((0, 0, 0));
    let g = (l as f64).sqrt().round() as i64;
    x.reshape([b, g, g, patch, patch, chans])
        .permute([0, 5, 1, 3, 2, 4]) // [B, C, gh, p, gw, p]
        .reshape([b, chans, g * patch, g * patch])
}
