//! The lr schedule, the parameter groups and AdamW against libtorch's own.

use maelab_core::config::RunConfig;
use maelab_worker::train::optim::{AdamW, AdamWConfig, layer_id, layer_scale, no_weight_decay};
use maelab_worker::train::schedule::{fractional_epoch, lr_at};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

fn cfg(extra: &str) -> RunConfig {
    RunConfig::from_toml_str(&format!("kind = \"pretrain\"\nepochs = 100\nwarmup_epochs = 10.0\nbatch_size = 256\nblr = 1.5e-4\nmin_lr = 1e-6\n{extra}"))
        .expect("config")
}

#[test]
fn lr_is_zero_at_start_peak_after_warmup_and_min_at_the_end() {
    let c = cfg("");
    let peak = 1.5e-4; // blr * 256 / 256
    assert_eq!(c.peak_lr(), peak);
    assert_eq!(lr_at(0.0, &c), 0.0);
    assert!((lr_at(5.0, &c) - peak / 2.0).abs() < 1e-15, "linear warmup");
    assert!((lr_at(10.0, &c) - peak).abs() < 1e-15);
    // Half-way through the cosine: the mean of peak and min.
    assert!((lr_at(55.0, &c) - (peak + 1e-6) / 2.0).abs() < 1e-12);
    assert!((lr_at(100.0, &c) - 1e-6).abs() < 1e-15);
    // Monotone decreasing after warmup.
    let lrs: Vec<f64> = (10..=100).map(|e| lr_at(f64::from(e), &c)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    // The fractional epoch moves within an epoch.
    assert_eq!(fractional_epoch(3, 50, 200), 3.25);
    // The absolute lr scales with the effective batch.
    let c = cfg("accum_iter = 2");
    assert!((c.peak_lr() - 3e-4).abs() < 1e-15);
}

#[test]
fn layer_decay_scales_follow_the_formula() {
    let (depth, decay) = (12u32, 0.75f64);
    let l = depth + 1;
    assert_eq!(layer_id("cls_token", l), 0);
    assert_eq!(layer_id("pos_embed", l), 0);
    assert_eq!(layer_id("patch_embed.proj.weight", l), 0);
    assert_eq!(layer_id("blocks.0.attn.qkv.weight", l), 1);
    assert_eq!(layer_id("blocks.11.mlp.fc2.bias", l), 12);
    assert_eq!(layer_id("fc_norm.weight", l), 13);
    assert_eq!(layer_id("head.weight", l), 13);
    for (name, id) in [
        ("patch_embed.proj.weight", 0),
        ("blocks.4.norm1.weight", 5),
        ("head.bias", 13),
    ] {
        let expected = decay.powi(13 - id);
        assert!(
            (layer_scale(name, depth, decay) - expected).abs() < 1e-15,
            "{name}"
        );
    }
    assert_eq!(layer_scale("head.weight", depth, decay), 1.0);
    assert!((layer_scale("cls_token", depth, decay) - 0.75f64.powi(13)).abs() < 1e-15);
}

#[test]
fn no_decay_on_biases_norms_tokens_and_position_embeddings() {
    assert!(no_weight_decay("blocks.0.attn.qkv.bias", 1));
    assert!(no_weight_decay("norm.weight", 1));
    assert!(no_weight_decay("cls_token", 3));
    assert!(no_weight_decay("mask_token", 3));
    assert!(no_weight_decay("pos_embed", 3));
    assert!(!no_weight_decay("blocks.0.attn.qkv.weight", 2));
    assert!(!no_weight_decay("patch_embed.proj.weight", 4));
}

/// Three steps of ours and of libtorch's AdamW from the same start give the
/// same weights (no layer decay, one group with decay).
#[test]
fn adamw_matches_libtorch() {
    tch::manual_seed(1);
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4, 3], nn::Init::Const(0.0));
        tch::no_grad(|| {
            let mut w = w.shallow_clone();
            w.copy_(&(Tensor::arange(12, (Kind::Float, Device::Cpu)).view([4, 3]) / 10.0));
        });
        (vs, w)
    };
    let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    let loss_of = |w: &Tensor| x.matmul(w).tanh().sum(Kind::Float);

    let (vs_a, w_a) = make();
    let mut ours = AdamW::new(
        &vs_a,
        AdamWConfig {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.05,
            layer_decay: 1.0,
            depth: 1,
        },
    );
    let (vs_b, w_b) = make();
    let mut theirs = nn::AdamW {
        beta1: 0.9,
        beta2: 0.95,
        wd: 0.05,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&vs_b, 0.01)
    .expect("optimizer");
    for _ in 0..3 {
        ours.zero_grad();
        loss_of(&w_a).backward();
        ours.step(0.01);
        theirs.zero_grad();
        loss_of(&w_b).backward();
        theirs.step();
    }
    let diff = (&w_a - &w_b).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "max difference {diff}");
    assert!(
        (&w_a - Tensor::arange(12, (Kind::Float, Device::Cpu)).view([4, 3]) / 10.0)
            .abs()
            .max()
            .double_value(&[])
            > 1e-3
    );
    assert_eq!(ours.step, 3);
}

#[test]
fn clipping_scales_the_global_norm_down() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
    let opt = AdamW::new(
        &vs,
        AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            layer_decay: 1.0,
            depth: 1,
        },
    );
    (&w * Tensor::from_slice(&[30.0f32, 40.0]))
        .sum(Kind::Float)
        .backward();
    let norm = opt.clip_grad_norm(5.0);
    assert!((norm - 50.0).abs() < 1e-4);
    let g = w.grad();
    assert!((g.norm().double_value(&[]) - 5.0).abs() < 1e-3);
    assert!((g.double_value(&[0]) - 3.0).abs() < 1e-3);
}
