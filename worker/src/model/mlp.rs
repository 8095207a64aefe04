//! The transformer MLP: fc1, exact GELU, fc2 (timm `Mlp`).

use tch::{Tensor, nn};

use super::layers::Linear;

#[derive(Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(p: nn::Path, dim: i64, hidden: i64) -> Self {
        Self {
            fc1: Linear::new(&p / "fc1", dim, hidden),
            fc2: Linear::new(&p / "fc2", hidden, dim),
        }
    }

    /// [B, N, D] -> [B, N, D]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("none"))
    }
}
