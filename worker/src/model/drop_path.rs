//! Stochastic depth (timm `drop_path`): in training, drop a residual branch for
//! whole samples with probability `p` and scale the kept ones by 1 / (1 - p).

use tch::{Kind, Tensor};

/// [B, ...] -> [B, ...]; identity when `p` is 0 or not training. Draws from
/// torch's generator, which the trainer seeds per epoch.
pub fn drop_path(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let keep = 1.0 - p;
    let mut shape = vec![x.size()[0]];
    shape.resize(x.dim(), 1);
    // Scale the [B, 1, 1] mask, not the [B, N, D] product (as timm does).
    let mask = Tensor::rand(&shape, (Kind::Float, x.device()))
        .lt(keep)
        .to_kind(x.kind())
        / keep;
    x * mask
}
