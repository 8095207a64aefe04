//! Multi-head self-attention (timm `Attention`, qkv with bias) through
//! `scaled_dot_product_attention`, which picks the fused kernel of the device;
//! fp32 on the CPU through one batched oneDNN matmul per product instead
//! (`crate::torch_ext::attention`), 1.1-1.5x faster there at CIFAR's 17-65
//! tokens than libtorch's CPU flash kernel (docs/benchmarks.md).

use tch::{Tensor, nn};

use super::layers::Linear;
use crate::torch_ext;

#[derive(Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: i64,
}

impl Attention {
    pub fn new(p: nn::Path, dim: i64, num_heads: i64) -> Self {
        Self {
            qkv: Linear::new(&p / "qkv", dim, 3 * dim),
            proj: Linear::new(&p / "proj", dim, dim),
            num_heads,
        }
    }

    /// [B, N, D] -> [B, N, D]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().unwrap_or((0, 0, 0));
        let h = self.num_heads;
        let qkv = self.qkv.forward(x); // [B, N, 3D]
        if torch_ext::use_onednn_attention(&qkv) {
            match torch_ext::attention(&qkv, h) {
                Ok(out) => return self.proj.forward(&out),
                // SDPA below fails (or works) on the same input.
                Err(e) => tracing::debug!("oneDNN attention: {e}"),
            }
        }
        let qkv = qkv.reshape([b, n, 3, h, d / h]).permute([2, 0, 3, 1, 4]); // [3, B, H, N, D/H]
        // unbind, not three selects: its backward stacks the three gradients
        // once, where each select's backward would fill a zeroed [3, ..] copy.
        let qkv = qkv.unbind(0);
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        let out =
            Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, false); // [B, H, N, D/H]
        self.proj.forward(&out.transpose(1, 2).reshape([b, n, d]))
    }
}
