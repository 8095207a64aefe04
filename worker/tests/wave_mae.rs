//! Wave-MAE through the model and the trainer: wave attention where
//! `wave_in` puts it (parameter counts say so), the masked encoder, the
//! classifier on the whole grid, the frequency-aware loss, and sharpness
//! metrics in every pretraining epoch row.

mod train_support;

use maelab_core::config::{ModelShape, preset};
use maelab_worker::metrics::FrequencyLoss;
use maelab_worker::model::masking::masking_noise;
use maelab_worker::model::wave::{finetune_attn, pretrain_attn};
use maelab_worker::model::{AttnKind, Classifier, Mae, MaeConfig, n_parameters};
use maelab_worker::train;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor, nn};
use train_support::{RecordingSink, config, options, write_dataset};

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

fn mae(encoder_attn: AttnKind, decoder_attn: AttnKind) -> (nn::VarStore, Mae) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MaeConfig {
        shape: tiny_shape(),
        norm_pix_loss: true,
        encoder_attn,
        decoder_attn,
    };
    let m = Mae::new(&vs.root(), &cfg).expect("model");
    (vs, m)
}

fn noise(b: i64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    masking_noise(&mut rng, b, 64, Device::Cpu)
}

/// Wave attention minus plain attention (qkv + proj), per block of width c,
/// from the formula in wave/attention.rs.
fn extra_per_block(c: i64) -> i64 {
    let wave = (c * c + c)
        + (c * (c / 4) + c / 4 + 2 * (c / 4))
        + (9 * c * c + c + 2 * c)
        + (2 * c + 2 * c * c + 2 * c)
        + ((c + c / 4) * c + c);
    let plain = (3 * c * c + 3 * c) + (c * c + c);
    wave - plain
}

#[test]
fn wave_attention_goes_where_wave_in_says() {
    let _torch = train_support::torch_lock();
    let wave = AttnKind::Wave { sr: 1 };
    let (vs, _) = mae(AttnKind::Plain, AttnKind::Plain);
    let plain = n_parameters(&vs);
    let (vs, _) = mae(AttnKind::Plain, wave);
    assert_eq!(n_parameters(&vs) - plain, extra_per_block(16)); // 1 decoder block
    let (vs, _) = mae(wave, AttnKind::Plain);
    assert_eq!(n_parameters(&vs) - plain, 2 * extra_per_block(32)); // 2 encoder blocks
    let (vs, _) = mae(wave, wave);
    assert_eq!(
        n_parameters(&vs) - plain,
        2 * extra_per_block(32) + extra_per_block(16)
    );
    assert!(vs.variables().contains_key("blocks.1.attn.filter.0.weight"));
    assert!(
        vs.variables()
            .contains_key("decoder_blocks.0.attn.kv.1.weight")
    );
}

#[test]
fn run_configs_pick_the_mixers() {
    let _torch = train_support::torch_lock();
    let dir = std::path::Path::new("/nonexistent");
    let wave = AttnKind::Wave { sr: 1 };
    let cases = [
        ("model = \"mae\"", (AttnKind::Plain, AttnKind::Plain)),
        (
            "model = \"wave_mae\"\nwave_in = \"decoder\"",
            (AttnKind::Plain, wave),
        ),
        (
            "model = \"wave_mae\"\nwave_in = \"encoder\"",
            (wave, AttnKind::Plain),
        ),
        (
            "model = \"wave_mae\"\nwave_in = \"both\"\nwave_sr = 2",
            (AttnKind::Wave { sr: 2 }, AttnKind::Wave { sr: 2 }),
        ),
    ];
    for (extra, expected) in cases {
        let cfg = config("pretrain", dir, extra);
        assert_eq!(pretrain_attn(&cfg), expected, "{extra}");
        assert_eq!(
            finetune_attn(&config("finetune", dir, extra)),
            expected.0,
            "{extra}"
        );
    }
}

#[test]
fn every_variant_trains_a_step() {
    let _torch = train_support::torch_lock();
    let imgs = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let wave = AttnKind::Wave { sr: 1 };
    for (enc, dec) in [
        (AttnKind::Plain, wave),
        (wave, AttnKind::Plain),
        (wave, wave),
    ] {
        let (vs, m) = mae(enc, dec);
        let out = m.forward(&imgs, 0.75, &noise(4), true);
        assert_eq!(out.pred.size(), [4, 64, 48]);
        let loss = f64::try_from(&out.loss).expect("scalar");
        assert!(loss.is_finite() && loss > 0.0);
        out.loss.backward();
        // The wave layers learn: their filters get gradients.
        let name = if enc == wave {
            "blocks.0.attn.filter.0.weight"
        } else {
            "decoder_blocks.0.attn.filter.0.weight"
        };
        let g = vs.variables()[name].grad();
        assert!(
            f64::try_from(g.abs().sum(Kind::Float)).expect("sum") > 0.0,
            "{enc:?}/{dec:?}"
        );
    }
}

#[test]
fn masked_wave_encoder_is_deterministic_in_eval() {
    let _torch = train_support::torch_lock();
    // The wave encoder scatters the 16 visible tokens onto the 8x8 grid; in
    // eval mode (BatchNorm running stats) the result is deterministic.
    let (_, m) = mae(AttnKind::Wave { sr: 1 }, AttnKind::Plain);
    let imgs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (a, mask_a, _) = m.forward_encoder(&imgs, 0.75, &noise(2), false);
    let (b, mask_b, _) = m.forward_encoder(&imgs, 0.75, &noise(2), false);
    assert_eq!(a.size(), [2, 1 + 16, 32]);
    assert!(a.equal(&b) && mask_a.equal(&mask_b));
}

#[test]
fn classifier_with_wave_encoder_runs_on_the_whole_grid() {
    let _torch = train_support::torch_lock();
    tch::set_num_threads(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model =
        Classifier::new(&vs.root(), &tiny_shape(), 0.1, AttnKind::Wave { sr: 2 }).expect("model");
    let logits = model.forward(
        &Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu)),
        true,
    );
    assert_eq!(logits.size()[0], 3);
    assert!(vs.variables().contains_key("blocks.0.attn.kv_embed.weight"));
}

#[test]
fn hf_loss_weight_adds_the_sub_band_term() {
    let _torch = train_support::torch_lock();
    let (_, plain) = mae(AttnKind::Plain, AttnKind::Plain);
    let (_, weighted) = mae(AttnKind::Plain, AttnKind::Plain);
    let weighted = weighted.with_hf_loss(0.5).expect("even patch");
    let imgs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    // Same seed, same init: same prediction from both models.
    let out = plain.forward(&imgs, 0.75, &noise(2), false);
    let out_w = weighted.forward(&imgs, 0.75, &noise(2), false);
    assert!(out.pred.equal(&out_w.pred));
    let target = plain.loss_target(&imgs);
    let fl = FrequencyLoss::new(4, 3, 1.0, Device::Cpu).expect("fl");
    let hf = f64::try_from(fl.high_frequency(&out.pred, &target, &out.mask)).expect("hf");
    let (l, lw) = (
        f64::try_from(&out.loss).expect("l"),
        f64::try_from(&out_w.loss).expect("lw"),
    );
    assert!(hf > 0.0);
    assert!(
        (lw - (l + 0.5 * hf)).abs() < 1e-5 * lw,
        "{lw} vs {l} + 0.5 * {hf}"
    );
    // Weight 0 is the plain loss.
    let (_, zero) = mae(AttnKind::Plain, AttnKind::Plain);
    let zero = zero.with_hf_loss(0.0).expect("zero");
    let lz = f64::try_from(zero.forward(&imgs, 0.75, &noise(2), false).loss).expect("lz");
    assert_eq!(lz, l);
}

#[test]
fn wave_mae_pretrains_and_finetunes_with_sharpness_in_every_row() {
    let _torch = train_support::torch_lock();
    tch::set_num_threads(1);
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let root = tmp.path();
    let data = write_dataset(&root.join("data"), 30, 40);
    let cache = root.join("cache");
    let pre = config(
        "pretrain",
        &data,
        "model = \"wave_mae\"\nwave_in = \"both\"\nhf_loss_weight = 1.0\nepochs = 2\ntrain_subset = 128\nbatch_size = 32",
    );
    let pre_dir = root.join("pre");
    let mut sink = train::FileSink::new(&pre_dir, pre.epochs, false).expect("sink");
    train::run(&pre, &options(&pre_dir, &cache), &mut sink).expect("pretrain");
    let log = std::fs::read_to_string(pre_dir.join("log.txt")).expect("log");
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let psnr = row["psnr"].as_f64().expect("psnr in log.txt");
        let ratio = row["hf_ratio"].as_f64().expect("hf_ratio in log.txt");
        assert!(psnr.is_finite() && psnr > 0.0, "{row}");
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
    }

    // Finetune on the whole grid from the wave encoder.
    let ft = config(
        "finetune",
        &data,
        "model = \"wave_mae\"\nwave_in = \"both\"\nepochs = 1\ntrain_subset = 64\nbatch_size = 32\nmixup = 0.0\ncutmix = 0.0",
    );
    let mut opts = options(&root.join("ft"), &cache);
    opts.init_checkpoint = Some(pre_dir.join("checkpoint-last.safetensors"));
    let mut sink = RecordingSink::default();
    train::run(&ft, &opts, &mut sink).expect("finetune");
    assert!(sink.rows[0].test_acc1.is_some());
}
