//! Shape and behaviour tests of the MAE and the classifier on a tiny config (CPU).

mod train_support;

use maelab_core::config::{ModelShape, preset};
use maelab_worker::model::masking::{len_keep, masking_noise, random_masking};
use maelab_worker::model::patchify::{patchify, unpatchify};
use maelab_worker::model::pos_embed::sincos_2d;
use maelab_worker::model::{AttnKind, Classifier, Mae, MaeConfig, n_parameters};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor, nn};

fn tiny_shape() -> ModelShape {
    let mut s = preset("vit-micro/4").expect("preset");
    s.embed_dim = 32;
    s.depth = 2;
    s.num_heads = 2;
    s.decoder_embed_dim = 16;
    s.decoder_depth = 1;
    s.decoder_num_heads = 2;
    s
}

fn tiny_mae(norm_pix_loss: bool) -> (nn::VarStore, Mae) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MaeConfig {
        shape: tiny_shape(),
        norm_pix_loss,
        encoder_attn: AttnKind::Plain,
        decoder_attn: AttnKind::Plain,
    };
    let mae = Mae::new(&vs.root(), &cfg).expect("model");
    (vs, mae)
}

fn noise(seed: u64, b: i64, l: i64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    masking_noise(&mut rng, b, l, Device::Cpu)
}

#[test]
fn patchify_then_unpatchify_gives_the_images_back() {
    let _torch = train_support::torch_lock();
    let imgs = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    for patch in [2, 4, 8] {
        let rows = patchify(&imgs, patch);
        assert_eq!(
            rows.size(),
            [3, (32 / patch) * (32 / patch), patch * patch * 3]
        );
        let back = unpatchify(&rows, patch, 3);
        assert!(back.equal(&imgs), "patch {patch}");
    }
    // Row 1 of image 0 is the patch at grid (0, 1): pixels y 0..4, x 4..8, (y, x, c) order.
    let rows = patchify(&imgs, 4);
    let expected = imgs
        .get(0)
        .narrow(1, 0, 4)
        .narrow(2, 4, 4)
        .permute([1, 2, 0])
        .reshape([-1]);
    assert!(rows.get(0).get(1).equal(&expected));
}

#[test]
fn masking_keeps_floor_of_n_times_one_minus_ratio() {
    let _torch = train_support::torch_lock();
    let x = Tensor::randn([4, 64, 8], (Kind::Float, Device::Cpu));
    for ratio in [0.75, 0.7, 0.5, 0.9] {
        let keep = len_keep(64, ratio);
        assert_eq!(keep, (64.0 * (1.0 - ratio)).floor() as i64);
        let m = random_masking(&x, ratio, &noise(1, 4, 64));
        assert_eq!(m.x.size(), [4, keep, 8]);
        let removed = m.mask.sum_dim_intlist(1, false, Kind::Float);
        for b in 0..4 {
            assert_eq!(
                removed.double_value(&[b]),
                (64 - keep) as f64,
                "ratio {ratio}"
            );
        }
        // The kept tokens are the unmasked ones, taken from their grid positions.
        let kept_mask = m.mask.gather(1, &m.ids_keep, false);
        assert_eq!(kept_mask.sum(Kind::Float).double_value(&[]), 0.0);
        let first = x.get(0).get(m.ids_keep.int64_value(&[0, 0]));
        assert!(m.x.get(0).get(0).equal(&first));
    }
    assert_eq!(len_keep(64, 0.7), 19);
}

#[test]
fn masking_depends_only_on_the_noise() {
    let _torch = train_support::torch_lock();
    let x = Tensor::randn([2, 64, 8], (Kind::Float, Device::Cpu));
    let a = random_masking(&x, 0.75, &noise(7, 2, 64));
    let b = random_masking(&x, 0.75, &noise(7, 2, 64));
    let c = random_masking(&x, 0.75, &noise(8, 2, 64));
    assert!(a.mask.equal(&b.mask));
    assert!(!a.mask.equal(&c.mask));
}

#[test]
fn loss_ignores_visible_patches_and_counts_masked_ones() {
    let _torch = train_support::torch_lock();
    let (_vs, mae) = tiny_mae(true);
    let imgs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| mae.forward(&imgs, 0.75, &noise(3, 2, 64), false));
    assert_eq!(out.pred.size(), [2, 64, 48]);
    let base = out.loss.double_value(&[]);
    // Find a visible and a masked patch of image 0.
    let mask: Vec<f32> = Vec::try_from(out.mask.get(0)).expect("mask");
    let visible = mask
        .iter()
        .position(|&m| m == 0.0)
        .expect("a visible patch") as i64;
    let masked = mask.iter().position(|&m| m == 1.0).expect("a masked patch") as i64;

    let changed = out.pred.copy();
    let _ = changed.get(0).get(visible).fill_(100.0);
    let loss = mae
        .forward_loss(&imgs, &changed, &out.mask)
        .double_value(&[]);
    assert_eq!(loss, base, "a visible patch changed the loss");

    let changed = out.pred.copy();
    let _ = changed.get(0).get(masked).fill_(100.0);
    let loss = mae
        .forward_loss(&imgs, &changed, &out.mask)
        .double_value(&[]);
    assert!(loss > base + 1.0, "a masked patch did not change the loss");
}

#[test]
fn norm_pix_target_is_zero_mean_unit_variance_per_patch() {
    let _torch = train_support::torch_lock();
    let (_vs, mae) = tiny_mae(true);
    let imgs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 3.0 + 1.5;
    let t = mae.loss_target(&imgs);
    assert_eq!(t.size(), [2, 64, 48]);
    let mean_err = t
        .mean_dim(-1, false, Kind::Float)
        .abs()
        .max()
        .double_value(&[]);
    let var_err = (t.var_dim(-1, true, false) - 1.0)
        .abs()
        .max()
        .double_value(&[]);
    assert!(mean_err < 1e-5, "mean {mean_err}");
    assert!(var_err < 1e-4, "var {var_err}");
    // Without norm_pix_loss the target is the raw pixels.
    let (_vs, raw) = tiny_mae(false);
    assert!(raw.loss_target(&imgs).equal(&patchify(&imgs, 4)));
}

#[test]
fn parameters_carry_official_names_and_init() {
    let _torch = train_support::torch_lock();
    let (vs, _mae) = tiny_mae(true);
    let vars = vs.variables();
    for name in [
        "patch_embed.proj.weight",
        "cls_token",
        "pos_embed",
        "blocks.1.attn.qkv.weight",
        "blocks.0.attn.proj.bias",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.norm1.weight",
        "norm.weight",
        "decoder_embed.weight",
        "mask_token",
        "decoder_pos_embed",
        "decoder_blocks.0.attn.qkv.weight",
        "decoder_norm.bias",
        "decoder_pred.weight",
    ] {
        assert!(vars.contains_key(name), "missing {name}");
    }
    // Position embeddings are fixed: stored, but not trained.
    let trainable: usize = vs.trainable_variables().len();
    assert_eq!(trainable + 2, vars.len());
    // xavier-uniform qkv: |w| <= sqrt(6 / (32 + 96)), std = bound / sqrt(3).
    let w = &vars["blocks.0.attn.qkv.weight"];
    let bound = (6.0f64 / 128.0).sqrt();
    assert!(w.abs().max().double_value(&[]) <= bound);
    let std = w.std(true).double_value(&[]);
    assert!((std - bound / 3f64.sqrt()).abs() < 0.1 * bound, "std {std}");
    let cls_std = vars["cls_token"].std(true).double_value(&[]);
    assert!(cls_std > 0.01 && cls_std < 0.03, "cls std {cls_std}");
    assert!(n_parameters(&vs) > 0);
}

#[test]
fn sincos_position_embedding_matches_the_official_layout() {
    let _torch = train_support::torch_lock();
    let (dim, grid) = (16usize, 4usize);
    let e = sincos_2d(dim, grid);
    assert_eq!(e.len(), (1 + grid * grid) * dim);
    assert!(e[..dim].iter().all(|&v| v == 0.0), "cls row is zero");
    // Patch (row 1, col 2): the first quarter is sin(col * w_k), w_0 = 1.
    let row = &e[(1 + grid + 2) * dim..(2 + grid + 2) * dim];
    assert!((row[0] - 2f32.sin()).abs() < 1e-6);
    assert!((row[dim / 4] - 2f32.cos()).abs() < 1e-6);
    assert!((row[dim / 2] - 1f32.sin()).abs() < 1e-6);
    assert!((row[3 * dim / 4] - 1f32.cos()).abs() < 1e-6);
}

#[test]
fn classifier_gives_logits_and_shares_the_encoder_names() {
    let _torch = train_support::torch_lock();
    tch::set_num_threads(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let shape = tiny_shape();
    let model = Classifier::new(&vs.root(), &shape, 0.1, AttnKind::Plain).expect("model");
    let imgs = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let logits = model.forward(&imgs, true);
    assert_eq!(logits.size(), [3, 10]);
    let vars = vs.variables();
    assert!(vars.contains_key("blocks.1.attn.qkv.weight"));
    assert!(vars.contains_key("fc_norm.weight"));
    assert!(!vars.contains_key("norm.weight"));
    let head_std = vars["head.weight"].std(true).double_value(&[]);
    assert!(head_std > 1e-5 && head_std < 3e-5, "head std {head_std}");
    // Eval mode is deterministic (no drop path).
    let a = tch::no_grad(|| model.forward(&imgs, false));
    let b = tch::no_grad(|| model.forward(&imgs, false));
    assert!(a.equal(&b));
}
