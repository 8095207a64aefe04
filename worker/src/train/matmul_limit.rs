//! The machine's fp32 matmul rate, which `maelab-worker bench` compares a
//! training step's matmul FLOPs against (`crate::model::flops`): a
//! 2048 x 2048 x 2048 matmul through libtorch's `matmul` (MKL's sgemm on x86
//! CPUs) and, on the CPU, through oneDNN's matmul (what the model's Linear
//! layers use there, `crate::torch_ext`).

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::model::flops::WeightMatmul;
use crate::torch_ext;

/// Matrix side of the measurement.
pub const SIDE: i64 = 2048;
/// Timed repetitions; the fastest counts (the least disturbed).
const REPEATS: usize = 5;

/// GFLOP/s of the 2048^3 matmul.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulRates {
    /// libtorch's `matmul`.
    pub libtorch: f64,
    /// oneDNN's matmul; `None` off the CPU or where oneDNN's fp32 matmul
    /// is unavailable.
    pub onednn: Option<f64>,
}

impl MatmulRates {
    /// The faster of the two: the limit a step's matmuls can reach here.
    pub fn best(&self) -> f64 {
        self.onednn.map_or(self.libtorch, |o| o.max(self.libtorch))
    }
}

/// Seconds of the fastest of [`REPEATS`] runs of `work` after one warm-up
/// run, each waited for on a GPU; `None` when a run fails.
fn fastest_seconds(device: Device, mut work: impl FnMut() -> Option<()>) -> Option<f64> {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    work()?;
    sync();
    let mut best = f64::INFINITY;
    for _ in 0..REPEATS {
        let t = Instant::now();
        work()?;
        sync();
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some(best.max(1e-12))
}

/// GFLOP/s of the 2048^3 matmul `mm` (fastest of [`REPEATS`]).
fn rate(device: Device, mut mm: impl FnMut() -> Option<Tensor>) -> Option<f64> {
    let seconds = fastest_seconds(device, || mm().map(drop))?;
    let flops = 2.0 * (SIDE as f64).powi(3);
    Some(flops / seconds / 1e9)
}

/// Time both matmuls on `device` (fp32, random operands).
pub fn measure(device: Device) -> MatmulRates {
    let a = Tensor::randn([SIDE, SIDE], (Kind::Float, device));
    let b = Tensor::randn([SIDE, SIDE], (Kind::Float, device));
    let libtorch = rate(device, || Some(a.matmul(&b))).unwrap_or(0.0);
    let onednn = (device == Device::Cpu && torch_ext::onednn_linear_works())
        .then(|| rate(device, || torch_ext::onednn_matmul(&a, &b).ok()))
        .flatten();
    MatmulRates { libtorch, onednn }
}

/// GFLOP/s of a training step's own weight matmuls run alone, at their
/// shapes, on what the model's Linear layers use (oneDNN on the CPU where it
/// works, libtorch's `matmul` elsewhere): for each layer the forward `x @ w^T`
/// and the backward's `g @ w` and `g^T @ x`, `batch` images. A 2048³ product
/// keeps every core's vector units busy; a step's matmuls are thinner (K of
/// 128-192 at vit-tiny), so this is the rate the step itself could reach if
/// nothing but its matmuls ran. `None` when a matmul fails.
pub fn shape_rate(device: Device, matmuls: &[WeightMatmul], batch: i64) -> Option<f64> {
    let onednn = device == Device::Cpu && torch_ext::onednn_linear_works();
    let mm = |a: &Tensor, b: &Tensor| -> Option<Tensor> {
        if onednn {
            torch_ext::onednn_matmul(a, b).ok()
        } else {
            Some(a.matmul(b))
        }
    };
    let mut seconds = 0.0;
    let mut flops = 0.0;
    for m in matmuls {
        let rows = batch * m.tokens;
        let x = Tensor::randn([rows, m.in_dim], (Kind::Float, device));
        let w = Tensor::randn([m.out_dim, m.in_dim], (Kind::Float, device));
        let g = Tensor::randn([rows, m.out_dim], (Kind::Float, device));
        let layers = || -> Option<()> {
            for _ in 0..m.count {
                let _y = mm(&x, &w.tr())?;
                let _gx = mm(&g, &w)?;
                let _gw = mm(&g.tr(), &x)?;
            }
            Some(())
        };
        let best = fastest_seconds(device, layers)?;
        seconds += best;
        flops += m.train_flops_per_image() * batch as f64;
    }
    Some(flops / seconds.max(1e-12) / 1e9)
}
