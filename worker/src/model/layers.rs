//! Linear and LayerNorm with MAE's initialisation, computing in the input's
//! precision: with bf16 inputs the fp32 master weights are cast on the fly (what
//! autocast would do), LayerNorm runs in fp32 for stability. fp32 Linear on
//! the CPU goes to oneDNN's matmul (`crate::torch_ext::linear`).

use tch::{Kind, Tensor, nn};

use super::init::xavier_uniform;
use crate::torch_ext;

/// LayerNorm eps of the official models (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f64 = 1e-6;

/// `nn.Linear` with xavier-uniform weight and zero bias.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: nn::Path, in_dim: i64, out_dim: i64) -> Self {
        let weight = p.var(
            "weight",
            &[out_dim, in_dim],
            xavier_uniform(in_dim, out_dim),
        );
        let bias = p.var("bias", &[out_dim], nn::Init::Const(0.0));
        Self { weight, bias }
    }

    /// [.., in] -> [.., out]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if torch_ext::use_onednn_linear(x, self.weight.kind()) {
            match torch_ext::linear(x, &self.weight, &self.bias) {
                Ok(y) => return y,
                // libtorch's linear below fails (or works) on the same input.
                Err(e) => tracing::debug!("oneDNN linear: {e}"),
            }
        }
        if x.kind() == self.weight.kind() {
            x.linear(&self.weight, Some(&self.bias))
        } else {
            let k = x.kind();
            x.linear(&self.weight.to_kind(k), Some(&self.bias.to_kind(k)))
        }
    }
}

/// LayerNorm over the last dimension, eps 1e-6, weight 1 and bias 0.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    dim: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, dim: i64) -> Self {
        let weight = p.var("weight", &[dim], nn::Init::Const(1.0));
        let bias = p.var("bias", &[dim], nn::Init::Const(0.0));
        Self { weight, bias, dim }
    }

    /// [.., D] -> [.., D]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let norm = |x: &Tensor| {
            x.layer_norm(
                [self.dim],
                Some(&self.weight),
                Some(&self.bias),
                LN_EPS,
                true,
            )
        };
        if x.kind() == Kind::Float {
            norm(x)
        } else {
            norm(&x.to_kind(Kind::Float)).to_kind(x.kind())
        }
    }
}
