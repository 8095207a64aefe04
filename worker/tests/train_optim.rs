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

/// A small classifier (vit-micro/4 at depth 2, no drop path) and the AdamW a
/// finetuning run builds for it: weight decay groups and layer-wise lr decay.
fn classifier_with_optimizer() -> (nn::VarStore, maelab_worker::model::Classifier, AdamW) {
    tch::manual_seed(7);
    let mut shape = maelab_core::config::preset("vit-micro/4").expect("preset");
    shape.depth = 2;
    let vs = nn::VarStore::new(Device::Cpu);
    let model = maelab_worker::model::Classifier::new(
        &vs.root(),
        &shape,
        0.0,
        maelab_worker::model::AttnKind::Plain,
    )
    .expect("classifier");
    let optim = AdamW::new(
        &vs,
        AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.05,
            layer_decay: 0.75,
            depth: shape.depth,
        },
    );
    (vs, model, optim)
}

/// libtorch's fused AdamW (what `step` runs) against the op-by-op update it
/// replaced (`step_per_tensor`), on a classifier's parameter groups (weight
/// decay, layer-wise lr decay) and the same gradients each step: six steps,
/// the first at lr 0 as warmup starts, give the same weights and moments to
/// 1e-6.
#[test]
fn fused_step_matches_the_op_by_op_update() {
    let (vs_a, _model_a, mut fused) = classifier_with_optimizer();
    let (mut vs_b, _model_b, mut reference) = classifier_with_optimizer();
    vs_b.copy(&vs_a).expect("same variables");
    let start: Vec<(String, Tensor)> = vs_a
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    // d(sum(var * G))/d var = G: both optimizers see the same gradients.
    let set_grads = |optim: &AdamW, grads: &[Tensor]| {
        optim.zero_grad();
        let loss = optim
            .params
            .iter()
            .zip(grads)
            .map(|(p, g)| (&p.var * g).sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |acc, x| {
                acc + x
            });
        loss.backward();
    };
    for lr in [0.0, 1e-3, 2e-3, 2e-3, 1e-3, 5e-4] {
        let grads: Vec<Tensor> = fused.params.iter().map(|p| p.var.randn_like()).collect();
        set_grads(&fused, &grads);
        fused.step(lr);
        set_grads(&reference, &grads);
        reference.step_per_tensor(lr);
    }
    assert_eq!(fused.step, 6);
    assert_eq!(reference.step, 6);
    let (a, b) = (vs_a.variables(), vs_b.variables());
    let mut moved = 0.0f64;
    for (name, t0) in &start {
        let diff = (&a[name] - &b[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: weights differ by {diff}");
        moved = moved.max((&a[name] - t0).abs().max().double_value(&[]));
    }
    assert!(moved > 1e-3, "the steps moved the weights ({moved})");
    for (ours, theirs) in fused.state_tensors().iter().zip(reference.state_tensors()) {
        assert_eq!(ours.0, theirs.0);
        let diff = (&ours.1 - &theirs.1).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{}: moments differ by {diff}", ours.0);
    }
}

#[test]
fn zero_grad_drops_the_gradients() {
    let (vs, model, optim) = classifier_with_optimizer();
    let imgs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let loss = || model.forward(&imgs, true).sum(Kind::Float);
    loss().backward();
    let first: Vec<Tensor> = optim.params.iter().map(|p| p.var.grad().copy()).collect();
    assert!(optim.params.iter().all(|p| p.var.grad().defined()));
    optim.zero_grad();
    assert!(optim.params.iter().all(|p| !p.var.grad().defined()));
    // The next backward writes the same gradients afresh, not added to old ones.
    loss().backward();
    for (p, g) in optim.params.iter().zip(&first) {
        let diff = (p.var.grad() - g).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{}: {diff}", p.name);
    }
    drop(vs);
}
