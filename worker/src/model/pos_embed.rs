//! Fixed 2-D sine-cosine position embeddings (MAE's `get_2d_sincos_pos_embed`),
//! with a zero row for the cls token. They are stored in the VarStore as
//! non-trainable variables so checkpoints carry them under the official names.

use tch::{Device, Kind, Tensor};

/// 1-D embedding of `positions` into `dim` channels: [sin(pos w_k), cos(pos w_k)]
/// with w_k = 1 / 10000^(k / (dim/2)).
fn sincos_1d(dim: usize, pos: f64, out: &mut Vec<f32>) {
    let half = dim / 2;
    let omega = |k: usize| 1.0 / 10000f64.powf(k as f64 / half as f64);
    out.extend((0..half).map(|k| (pos * omega(k)).sin() as f32));
    out.extend((0..half).map(|k| (pos * omega(k)).cos() as f32));
}

/// [1 + grid*grid, dim] as a flat row-major vector: a zero cls row, then one row
/// per patch (row i, column j at index 1 + i*grid + j). As in the official code
/// (numpy meshgrid order), the first half of the channels encodes the column,
/// the second half the row. `dim` must be divisible by 4.
pub fn sincos_2d(dim: usize, grid: usize) -> Vec<f32> {
    let mut out = vec![0f32; dim];
    for i in 0..grid {
        for j in 0..grid {
            sincos_1d(dim / 2, j as f64, &mut out);
            sincos_1d(dim / 2, i as f64, &mut out);
        }
    }
    out
}

/// The embedding as a tensor [1, 1 + grid*grid, dim].
pub fn sincos_2d_tensor(dim: i64, grid: i64, device: Device) -> Tensor {
    let v = sincos_2d(dim as usize, grid as usize);
    Tensor::from_slice(&v)
        .view([1, 1 + grid * grid, dim])
        .to_kind(Kind::Float)
        .to_device(device)
}
