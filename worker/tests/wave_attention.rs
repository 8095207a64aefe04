//! Wave-ViT's wavelet attention: shapes, parameter count against the formula,
//! the masked-encoder variant, BatchNorm's train/eval switch, gradients.

use maelab_worker::model::wave::{WaveAttention, WaveError};
use tch::{Device, Kind, Tensor, nn};

fn setup(seed: i64) {
    tch::set_num_threads(1);
    tch::manual_seed(seed);
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn max_abs(t: &Tensor) -> f64 {
    f64::try_from(t.abs().max()).unwrap()
}

fn trainable(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// The formula written out in attention.rs's module docs, term by term.
fn formula(c: i64, r: i64) -> i64 {
    let q = c * c + c;
    let reduce = c * (c / 4) + c / 4 + 2 * (c / 4);
    let filter = 9 * c * c + c + 2 * c;
    let kv_embed = if r > 1 { r * r * c * c + c } else { 0 };
    let kv = 2 * c + c * 2 * c + 2 * c;
    let proj = (c + c / 4) * c + c;
    q + reduce + filter + kv_embed + kv + proj
}

#[test]
fn parameter_count_matches_the_formula() {
    setup(0);
    for (c, heads, sr) in [(16, 2, 1), (32, 4, 2), (192, 3, 1), (128, 4, 1)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _a = WaveAttention::new(vs.root() / "attn", c, heads, sr, 1).unwrap();
        assert_eq!(trainable(&vs), formula(c, sr), "C={c} sr={sr}");
    }
    // The names mirror Wave-ViT's checkpoint.
    let vs = nn::VarStore::new(Device::Cpu);
    let _a = WaveAttention::new(vs.root() / "attn", 16, 2, 2, 0).unwrap();
    let names: Vec<String> = vs.variables().into_keys().collect();
    for name in [
        "attn.q.weight",
        "attn.reduce.0.weight",
        "attn.reduce.1.running_mean",
        "attn.filter.0.weight",
        "attn.filter.1.bias",
        "attn.kv_embed.weight",
        "attn.kv.0.weight",
        "attn.kv.1.weight",
        "attn.proj.weight",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

#[test]
fn forward_keeps_the_token_shape() {
    setup(1);
    let vs = nn::VarStore::new(Device::Cpu);
    // No prefix, an 8x8 grid; one prefix token on a 4x6 grid; sr = 2.
    let a0 = WaveAttention::new(vs.root() / "a0", 32, 4, 1, 0).unwrap();
    assert_eq!(
        a0.forward(&randn(&[2, 64, 32]), 8, 8, true).size(),
        [2, 64, 32]
    );
    let a1 = WaveAttention::new(vs.root() / "a1", 32, 4, 1, 1).unwrap();
    assert_eq!(
        a1.forward(&randn(&[3, 1 + 24, 32]), 4, 6, false).size(),
        [3, 25, 32]
    );
    let a2 = WaveAttention::new(vs.root() / "a2", 32, 4, 2, 1).unwrap();
    assert_eq!(
        a2.forward(&randn(&[2, 1 + 64, 32]), 8, 8, true).size(),
        [2, 65, 32]
    );
    assert!(a2.check_grid(8, 8).is_ok());
    assert_eq!(
        a2.check_grid(6, 8),
        Err(WaveError::Grid { h: 6, w: 8, sr: 2 })
    );
    assert!(a0.check_grid(5, 8).is_err());
}

#[test]
fn bad_shapes_are_refused_when_built() {
    let vs = nn::VarStore::new(Device::Cpu);
    assert_eq!(
        WaveAttention::new(vs.root() / "x", 30, 3, 1, 1).err(),
        Some(WaveError::Dim { dim: 30 })
    );
    assert_eq!(
        WaveAttention::new(vs.root() / "y", 32, 3, 1, 1).err(),
        Some(WaveError::Heads {
            dim: 32,
            num_heads: 3
        })
    );
    assert_eq!(
        WaveAttention::new(vs.root() / "z", 32, 4, 0, 1).err(),
        Some(WaveError::Sr { sr: 0 })
    );
}

#[test]
fn masked_variant_with_every_cell_visible_equals_the_plain_one() {
    setup(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let a = WaveAttention::new(vs.root() / "attn", 32, 4, 1, 1).unwrap();
    let x = randn(&[2, 1 + 16, 32]);
    let all = Tensor::arange(16, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .expand([2, 16], false);
    let plain = a.forward(&x, 4, 4, false);
    let masked = a.forward_masked(&x, &all, None, 4, 4, false);
    assert!(max_abs(&(plain - masked)) < 1e-5);
}

#[test]
fn masked_variant_puts_visible_tokens_where_they_belong() {
    setup(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let a = WaveAttention::new(vs.root() / "attn", 32, 4, 1, 1).unwrap();
    let (b, keep) = (2, 4);
    // [B, 1 + 4, C]: cls + 4 visible tokens of a 4x4 grid
    let x = randn(&[b, 1 + keep, 32]);
    let ids = Tensor::from_slice(&[0i64, 5, 10, 15, 3, 6, 9, 12]).view([b, keep]);
    let out = a.forward_masked(&x, &ids, None, 4, 4, false);
    assert_eq!(out.size(), [b, 1 + keep, 32]);

    // Same as scattering the visible tokens into a zero grid and running the
    // plain layer, then reading the visible cells: the definition in ml.md.
    let grid = Tensor::zeros([b, 16, 32], (Kind::Float, Device::Cpu));
    let grid = grid.scatter(
        1,
        &ids.unsqueeze(-1).expand([b, keep, 32], false),
        &x.narrow(1, 1, keep),
    );
    let full = a.forward(&Tensor::cat(&[x.narrow(1, 0, 1), grid], 1), 4, 4, false);
    let idx = ids.unsqueeze(-1).expand([b, keep, 32], false);
    let expected_vis = full.narrow(1, 1, 16).gather(1, &idx, false);
    assert!(max_abs(&(out.narrow(1, 1, keep) - expected_vis)) < 1e-5);
    // The cls query attends to the same keys/values either way.
    assert!(max_abs(&(out.narrow(1, 0, 1) - full.narrow(1, 0, 1))) < 1e-5);

    // Where the tokens sit matters: other positions give other outputs.
    let moved = Tensor::from_slice(&[1i64, 4, 11, 14, 2, 7, 8, 13]).view([b, keep]);
    let out_moved = a.forward_masked(&x, &moved, None, 4, 4, false);
    assert!(max_abs(&(&out - &out_moved)) > 1e-3);
    // And so does the fill of the masked cells.
    let fill = Tensor::ones([32], (Kind::Float, Device::Cpu));
    let out_filled = a.forward_masked(&x, &ids, Some(&fill), 4, 4, false);
    assert!(max_abs(&(out_filled - &out)) > 1e-3);
}

#[test]
fn batch_norm_follows_the_train_flag() {
    setup(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let a = WaveAttention::new(vs.root() / "attn", 16, 2, 1, 0).unwrap();
    let running = || vs.variables()["attn.reduce.1.running_mean"].copy();
    let before = running();
    let x = randn(&[4, 16, 16]) * 3.0 + 1.0;
    let _ = a.forward(&x, 4, 4, false);
    assert!(
        max_abs(&(running() - &before)) == 0.0,
        "eval must not touch running stats"
    );
    let _ = a.forward(&x, 4, 4, true);
    assert!(
        max_abs(&(running() - &before)) > 1e-4,
        "train updates running stats"
    );
}

#[test]
fn every_parameter_gets_a_gradient() {
    setup(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let a = WaveAttention::new(vs.root() / "attn", 16, 2, 2, 1).unwrap();
    let x = randn(&[2, 1 + 16, 16]).set_requires_grad(true);
    a.forward(&x, 4, 4, true)
        .square()
        .sum(Kind::Float)
        .backward();
    for (name, t) in vs.trainable_variables().iter().enumerate() {
        assert!(
            max_abs(&t.grad()) > 0.0,
            "parameter #{name} got no gradient"
        );
    }
    assert!(max_abs(&x.grad()) > 0.0);
}
