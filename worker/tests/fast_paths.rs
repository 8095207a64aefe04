//! The trainer's fast paths give the numbers of the plain ones (CPU, fp32):
//! fused attention (SDPA) and the oneDNN attention against softmax(QK^T /
//! sqrt(d)) V written out and against each other, the oneDNN Linear against
//! libtorch's `linear`, outputs and gradients to 1e-5;
//! and the bench's FLOPs count and matmul list against the built model.

use maelab_core::config::{RunConfig, RunConfigInput, RunKind};
use maelab_worker::model::attention::Attention;
use maelab_worker::model::flops::{train_flops_per_image, weight_matmuls};
use maelab_worker::model::masking::len_keep;
use maelab_worker::model::{Classifier, Mae, MaeConfig};
use maelab_worker::torch_ext;
use maelab_worker::train::matmul_limit::shape_rate;
use tch::{Device, Kind, Tensor, nn};

const TOL: f64 = 1e-5;

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// Largest absolute difference relative to the larger magnitude (at least 1).
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let diff = f64::try_from((a - b).abs().max()).unwrap();
    let scale = f64::try_from(a.abs().max()).unwrap().max(1.0);
    diff / scale
}

fn leaf(t: Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

/// softmax(q k^T / sqrt(d)) v, [B, H, Nq, d] x [B, H, Nk, d] -> [B, H, Nq, d].
fn unfused_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let d = *q.size().last().unwrap() as f64;
    (q.matmul(&k.transpose(-2, -1)) / d.sqrt())
        .softmax(-1, Kind::Float)
        .matmul(v)
}

fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, false)
}

/// SDPA from a qkv projection [B, N, 3 * h * d] to [B, N, h * d], laid out as
/// `torch_ext::attention` takes and gives it.
fn sdpa_from_qkv(qkv: &Tensor, h: i64) -> Tensor {
    let (b, n, c3) = qkv.size3().unwrap();
    let d = c3 / 3 / h;
    let heads = qkv.view([b, n, 3, h, d]).permute([2, 0, 3, 1, 4]).unbind(0);
    sdpa(&heads[0], &heads[1], &heads[2])
        .transpose(1, 2)
        .reshape([b, n, h * d])
}

/// True (after saying so) where libtorch refuses oneDNN's fp32 matmul, whose
/// paths the tests below then cannot reach.
fn onednn_unavailable() -> bool {
    let missing = !torch_ext::onednn_linear_works();
    if missing {
        eprintln!("oneDNN's fp32 matmul is unavailable on this CPU; the layers use libtorch's");
    }
    missing
}

/// The encoder's and decoder's attention layer against the same computation
/// unfused with libtorch's linear, by its own weights: outputs, and gradients
/// of the input and of every weight.
#[test]
fn attention_layer_matches_the_unfused_computation() {
    tch::manual_seed(3);
    for (b, n, dim, heads) in [(4, 17, 192, 3), (3, 65, 128, 4)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = Attention::new(vs.root() / "attn", dim, heads);
        let vars = vs.variables();
        let w = |name: &str| vars[&format!("attn.{name}")].shallow_clone();
        let x = leaf(randn(&[b, n, dim]));
        let x_ref = leaf(x.detach().copy());

        let out = attn.forward(&x);
        let d = dim / heads;
        let qkv = x_ref
            .linear(&w("qkv.weight"), Some(&w("qkv.bias")))
            .reshape([b, n, 3, heads, d])
            .permute([2, 0, 3, 1, 4]);
        let o = unfused_attention(&qkv.get(0), &qkv.get(1), &qkv.get(2))
            .transpose(1, 2)
            .reshape([b, n, dim]);
        let expected = o.linear(&w("proj.weight"), Some(&w("proj.bias")));
        assert!(rel_diff(&out, &expected) < TOL, "output, dim {dim}");

        let g = randn(&[b, n, dim]);
        let weights: Vec<Tensor> = ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
            .iter()
            .map(|n| w(n))
            .collect();
        let mut inputs: Vec<&Tensor> = vec![&x];
        inputs.extend(weights.iter());
        let fused = Tensor::run_backward(&[&out * &g], &inputs, false, false);
        inputs[0] = &x_ref;
        let plain = Tensor::run_backward(&[&expected * &g], &inputs, false, false);
        for (i, (a, e)) in fused.iter().zip(&plain).enumerate() {
            assert!(
                rel_diff(a, e) < TOL,
                "gradient {i}, dim {dim}: {}",
                rel_diff(a, e)
            );
        }
    }
}

/// SDPA on the layouts the models feed it (q, k, v as strided views of one
/// projection; wave attention's N/4 keys for N queries) against the unfused
/// formula: outputs and the gradients of q, k and v.
#[test]
fn sdpa_matches_softmax_attention_on_strided_views() {
    tch::manual_seed(4);
    // (batch, heads, queries, keys, head dim)
    for (b, h, nq, nk, d) in [(4, 3, 17, 17, 64), (2, 4, 65, 16, 32), (2, 2, 5, 5, 8)] {
        // q, k, v read from one [B, N, 3, H, d] buffer, as attention.rs does.
        let base_q = leaf(randn(&[b, nq, h, d]));
        let base_kv = leaf(randn(&[b, nk, 2, h, d]));
        let q = base_q.transpose(1, 2);
        let kv = base_kv.permute([2, 0, 3, 1, 4]).unbind(0);
        let out = sdpa(&q, &kv[0], &kv[1]);
        let expected = unfused_attention(&q, &kv[0], &kv[1]);
        assert!(rel_diff(&out, &expected) < TOL, "output nq {nq} nk {nk}");
        let g = randn(&[b, h, nq, d]);
        let fused = Tensor::run_backward(&[&out * &g], &[&base_q, &base_kv], false, false);
        let plain = Tensor::run_backward(&[&expected * &g], &[&base_q, &base_kv], false, false);
        for (a, e) in fused.iter().zip(&plain) {
            assert!(
                rel_diff(a, e) < TOL,
                "gradient nq {nq} nk {nk}: {}",
                rel_diff(a, e)
            );
        }
    }
}

/// The oneDNN self-attention gives SDPA's numbers from the same qkv
/// projection: outputs and the projection's gradient, at the encoder's and
/// decoder's shapes and at odd ones (one token, one head, a head dim of 8).
#[test]
fn onednn_attention_matches_sdpa() {
    if onednn_unavailable() {
        return;
    }
    tch::manual_seed(6);
    // (batch, tokens, heads, head dim)
    for (b, n, h, d) in [(4, 17, 3, 64), (3, 65, 4, 32), (2, 1, 1, 8), (1, 5, 2, 8)] {
        let qkv = leaf(randn(&[b, n, 3 * h * d]));
        let out = torch_ext::attention(&qkv, h).expect("oneDNN attention");
        let expected = sdpa_from_qkv(&qkv, h);
        assert_eq!(out.size(), expected.size());
        assert!(
            rel_diff(&out, &expected) < TOL,
            "output {b}x{n}, {h} heads of {d}"
        );
        let g = randn(&[b, n, h * d]);
        let ours = Tensor::run_backward(&[&out * &g], &[&qkv], false, false);
        let theirs = Tensor::run_backward(&[&expected * &g], &[&qkv], false, false);
        assert!(
            rel_diff(&ours[0], &theirs[0]) < TOL,
            "gradient {b}x{n}, {h} heads of {d}: {}",
            rel_diff(&ours[0], &theirs[0])
        );
    }
    // A projection that does not split into heads is refused with a message.
    let err = torch_ext::attention(&randn(&[2, 4, 10]), 3).unwrap_err();
    assert!(err.0.contains("3 * heads * d"), "{err}");
    // Only fp32 CPU tensors take the oneDNN path.
    let bf16 = randn(&[2, 4, 12]).to_kind(Kind::BFloat16);
    assert!(!torch_ext::use_onednn_attention(&bf16));
    assert!(torch_ext::use_onednn_attention(&randn(&[2, 4, 12])));
}

/// The oneDNN Linear gives libtorch's linear, for 2-D and 3-D inputs, with
/// gradients of input, weight and bias.
#[test]
fn onednn_linear_matches_libtorch_linear() {
    if onednn_unavailable() {
        return;
    }
    tch::manual_seed(5);
    for shape in [vec![64, 48], vec![8, 17, 192], vec![3, 65, 512]] {
        let k = *shape.last().unwrap();
        let n = 96;
        let x = leaf(randn(&shape));
        let w = leaf(randn(&[n, k]) / (k as f64).sqrt());
        let b = leaf(randn(&[n]));
        let y = torch_ext::linear(&x, &w, &b).expect("oneDNN linear");
        let y_ref = x.linear(&w, Some(&b));
        assert_eq!(y.size(), y_ref.size());
        assert!(rel_diff(&y, &y_ref) < TOL, "output {shape:?}");
        let g = randn(&y.size());
        let ours = Tensor::run_backward(&[&y * &g], &[&x, &w, &b], false, false);
        let theirs = Tensor::run_backward(&[&y_ref * &g], &[&x, &w, &b], false, false);
        for (name, (a, e)) in ["x", "w", "b"].iter().zip(ours.iter().zip(&theirs)) {
            assert!(
                rel_diff(a, e) < TOL,
                "gradient of {name}, {shape:?}: {}",
                rel_diff(a, e)
            );
        }
    }
    // Only fp32 CPU tensors take the oneDNN path, and by default only where
    // MKL does not run AVX-512 itself (this binary never sets the backend).
    let bf16 = randn(&[2, 8]).to_kind(Kind::BFloat16);
    assert!(!torch_ext::use_onednn_linear(&bf16, Kind::Float));
    assert_eq!(
        torch_ext::use_onednn_linear(&randn(&[2, 8]), Kind::Float),
        torch_ext::onednn_beats_mkl(&torch_ext::cpu_vendor())
    );
}

#[test]
fn the_default_linear_follows_the_cpu_vendor() {
    assert!(!torch_ext::onednn_beats_mkl("GenuineIntel"));
    assert!(torch_ext::onednn_beats_mkl("AuthenticAMD"));
    let vendor = torch_ext::cpu_vendor();
    if cfg!(target_arch = "x86_64") {
        let proc_cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        assert!(
            proc_cpuinfo.contains(&format!("vendor_id\t: {vendor}")),
            "cpuid's vendor {vendor:?} is not the one /proc/cpuinfo names"
        );
    }
}

fn config(kind: RunKind, preset: &str) -> RunConfig {
    RunConfig::resolve(RunConfigInput {
        kind: Some(kind),
        preset: Some(preset.into()),
        ..Default::default()
    })
    .expect("config")
}

/// The variables of a plain MAE (pretraining) built for `c`.
fn built_mae(c: &RunConfig) -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MaeConfig {
        shape: c.shape.clone(),
        norm_pix_loss: true,
        encoder_attn: maelab_worker::model::AttnKind::Plain,
        decoder_attn: maelab_worker::model::AttnKind::Plain,
    };
    Mae::new(&vs.root(), &cfg).expect("mae");
    vs
}

/// The variables of a plain classifier (finetuning) built for `c`.
fn built_classifier(c: &RunConfig) -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    Classifier::new(
        &vs.root(),
        &c.shape,
        0.1,
        maelab_worker::model::AttnKind::Plain,
    )
    .expect("classifier");
    vs
}

/// Multiply-adds of one image from the weights a built model holds: each
/// matrix weight times the tokens its layer sees (the patch embedding sees all
/// patches, the classifier head the pooled token).
fn macs_from_weights(vs: &nn::VarStore, tokens_of: impl Fn(&str) -> f64) -> f64 {
    matrix_weights(vs)
        .map(|(name, t)| t.numel() as f64 * tokens_of(&name))
        .sum()
}

/// The weights of a built model's matmuls (Linear and the patch embedding's
/// conv; not LayerNorm's vectors).
fn matrix_weights(vs: &nn::VarStore) -> impl Iterator<Item = (String, Tensor)> {
    vs.variables()
        .into_iter()
        .filter(|(name, t)| name.ends_with(".weight") && t.dim() >= 2)
}

#[test]
fn flops_count_follows_the_built_model() {
    for preset in ["vit-micro/4", "vit-tiny/4", "vit-tiny/2"] {
        let c = config(RunKind::Pretrain, preset);
        let l = f64::from(c.shape.num_patches());
        let keep = 1.0 + len_keep(i64::from(c.shape.num_patches()), c.mask_ratio) as f64;
        let vs = built_mae(&c);
        let macs = macs_from_weights(&vs, |name| {
            if name.starts_with("patch_embed") {
                l
            } else if name.starts_with("blocks.") || name == "decoder_embed.weight" {
                keep
            } else {
                1.0 + l // decoder blocks and decoder_pred, cls included
            }
        });
        let counted = train_flops_per_image(&c).expect("plain MAE is counted");
        assert!(
            (counted - 6.0 * macs).abs() / counted < 1e-12,
            "pretrain {preset}"
        );

        let c = config(RunKind::Finetune, preset);
        let vs = built_classifier(&c);
        let macs = macs_from_weights(&vs, |name| match name {
            n if n.starts_with("patch_embed") => l,
            "head.weight" => 1.0,
            _ => 1.0 + l,
        });
        let counted = train_flops_per_image(&c).expect("classifier is counted");
        assert!(
            (counted - 6.0 * macs).abs() / counted < 1e-12,
            "finetune {preset}"
        );
    }
}

/// `(group, out, in)` of every matrix weight a built model holds, sorted:
/// "blocks.3.attn.qkv.weight" is group "blocks.qkv", the patch embedding's
/// [D, C, p, p] conv is the [C*p*p] -> [D] matmul it is.
fn weight_shapes(vs: &nn::VarStore) -> Vec<(String, i64, i64)> {
    let mut shapes: Vec<_> = matrix_weights(vs)
        .map(|(name, t)| {
            let parts: Vec<&str> = name.split('.').collect();
            let group = match parts[0] {
                "blocks" | "decoder_blocks" => format!("{}.{}", parts[0], parts[3]),
                other => other.to_string(),
            };
            let size = t.size();
            (group, size[0], size[1..].iter().product())
        })
        .collect();
    shapes.sort();
    shapes
}

/// The same from the bench's list, each layer `count` times.
fn listed_shapes(c: &RunConfig) -> Vec<(String, i64, i64)> {
    let mut shapes: Vec<_> = weight_matmuls(c)
        .expect("plain MAE is listed")
        .iter()
        .flat_map(|m| (0..m.count).map(|_| (m.name.to_string(), m.out_dim, m.in_dim)))
        .collect();
    shapes.sort();
    shapes
}

#[test]
fn listed_matmuls_are_the_built_models_layers() {
    for preset in ["vit-micro/4", "vit-tiny/4"] {
        let c = config(RunKind::Pretrain, preset);
        let vs = built_mae(&c);
        assert_eq!(weight_shapes(&vs), listed_shapes(&c), "pretrain {preset}");

        let c = config(RunKind::Finetune, preset);
        let vs = built_classifier(&c);
        assert_eq!(weight_shapes(&vs), listed_shapes(&c), "finetune {preset}");
    }
}

#[test]
fn the_step_matmuls_replay_at_a_finite_rate() {
    let c = config(RunKind::Pretrain, "vit-micro/4");
    let matmuls = weight_matmuls(&c).expect("listed");
    let rate = shape_rate(Device::Cpu, &matmuls, 4).expect("every matmul runs");
    assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
}

/// Benchmark, not a test (`cargo test --release -p maelab-worker --test
/// fast_paths attention_speed -- --ignored --nocapture`): forward and backward
/// of self-attention at vit-tiny/4's shapes, batch 128, 2 threads, oneDNN
/// against SDPA, alternating, fastest of 7 rounds of 5 each.
#[test]
#[ignore]
fn attention_speed() {
    if onednn_unavailable() {
        return;
    }
    tch::set_num_threads(2);
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        for _ in 0..5 {
            f();
        }
        t.elapsed().as_secs_f64() / 5.0
    };
    for (what, b, n, h, d) in [
        ("encoder, pretraining", 128, 17, 3, 64),
        ("decoder, pretraining", 128, 65, 4, 32),
        ("encoder, finetuning", 128, 65, 3, 64),
    ] {
        let qkv = leaf(randn(&[b, n, 3 * h * d]));
        let g = randn(&[b, n, h * d]);
        let onednn = || {
            let out = torch_ext::attention(&qkv, h).unwrap();
            Tensor::run_backward(&[&out * &g], &[&qkv], false, false);
        };
        let with_sdpa = || {
            let out = sdpa_from_qkv(&qkv, h);
            Tensor::run_backward(&[&out * &g], &[&qkv], false, false);
        };
        onednn();
        with_sdpa();
        let (mut best_o, mut best_s) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..7 {
            best_o = best_o.min(time(&onednn));
            best_s = best_s.min(time(&with_sdpa));
        }
        println!(
            "attention {what} ({b}x{n}, {h} heads of {d}): oneDNN {:.2} ms, SDPA {:.2} ms, {:.2}x",
            best_o * 1e3,
            best_s * 1e3,
            best_s / best_o
        );
    }
}
