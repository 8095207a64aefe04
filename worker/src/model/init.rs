//! Explicit weight initialisations of the official MAE code (`initialize_weights`
//! in models_mae.py, timm's `trunc_normal_`). tch's defaults differ (Kaiming
//! uniform for Linear, eps 1e-5 for LayerNorm), so every layer sets them here.

use tch::nn::Init;

/// Xavier (Glorot) uniform for a weight of `fan_in` inputs and `fan_out` outputs:
/// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(fan_in: i64, fan_out: i64) -> Init {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -a, up: a }
}

/// Normal(0, std) cut at two standard deviations, like timm's `trunc_normal_`
/// at the small stds MAE uses (there the cut at +-2 absolute never bites, so
/// this is the same distribution as theirs in practice).
pub fn trunc_normal(t: &tch::Tensor, std: f64) {
    tch::no_grad(|| {
        let v = (t.randn_like() * std).clamp(-2.0 * std, 2.0 * std);
        let mut t = t.shallow_clone();
        t.copy_(&v);
    });
}
