//! End-to-end trainer runs on a small synthetic CIFAR-format dataset (CPU, one
//! thread, a 2-block model): learning, reproducibility, exact resume, encoder
//! loading, refusal of foreign checkpoints, non-finite losses.

mod train_support;

use maelab_worker::events::StopReason;
use maelab_worker::train::{self, Outcome, TrainError, checkpoint};
use std::sync::MutexGuard;

use tempfile::TempDir;
use train_support::{RecordingSink, config, options, write_dataset};

struct Env {
    _tmp: TempDir,
    root: std::path::PathBuf,
    data: std::path::PathBuf,
    _guard: MutexGuard<'static, ()>,
}

fn env() -> Env {
    let guard = train_support::torch_lock();
    tch::set_num_threads(1);
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().to_path_buf();
    // 5 x 120 = 600 train images, 200 test.
    let data = write_dataset(&root.join("data"), 120, 200);
    Env {
        _tmp: tmp,
        root,
        data,
        _guard: guard,
    }
}

fn read_log(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("log.txt"))
        .expect("log.txt")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn pretraining_two_epochs_lowers_the_loss_and_writes_its_files() {
    let e = env();
    let cfg = config(
        "pretrain",
        &e.data,
        "epochs = 3\nwarmup_epochs = 0.5\nblr = 1e-3\ntrain_subset = 512",
    );
    let out = e.root.join("run");
    let mut sink = train::FileSink::new(&out, cfg.epochs, false).expect("sink");
    let outcome =
        train::run(&cfg, &options(&out, &e.root.join("cache")), &mut sink).expect("train");
    assert_eq!(outcome, Outcome::Finished);
    let log = read_log(&out);
    assert_eq!(log.len(), 3);
    for key in [
        "train_lr",
        "train_loss",
        "epoch",
        "epoch_seconds",
        "images_per_second",
    ] {
        assert!(log[0].get(key).is_some(), "log.txt lacks {key}");
    }
    let loss = |i: usize| log[i]["train_loss"].as_f64().expect("loss");
    assert!(
        loss(2) < loss(0),
        "loss did not fall: {} -> {}",
        loss(0),
        loss(2)
    );
    assert!(out.join("checkpoint-last.safetensors").is_file());
    assert!(out.join("checkpoint-last.json").is_file());
    let png = std::fs::read(out.join("recon-epoch-0002.png")).expect("png");
    let img = image::load_from_memory(&png).expect("decodes");
    // 8 rows of 4 panels, 32 px upscaled 4x.
    assert_eq!((img.width(), img.height()), (4 * 32 * 4, 8 * 32 * 4));
    let state = checkpoint::read_state(&out.join("checkpoint-last.json")).expect("state");
    assert_eq!(state.epoch, 3);
    assert_eq!(state.step, 3 * (512 / 64));
}

#[test]
fn same_seed_same_loss_and_resume_continues_exactly() {
    let e = env();
    let cfg = config(
        "pretrain",
        &e.data,
        "epochs = 2\ntrain_subset = 256\nblr = 1e-3",
    );
    let cache = e.root.join("cache");

    let full = e.root.join("full");
    let mut a = RecordingSink::default();
    train::run(&cfg, &options(&full, &cache), &mut a).expect("full run");

    // Same run, stopped after its first checkpoint, then resumed.
    let split = e.root.join("split");
    let mut b = RecordingSink {
        stop_after_checkpoints: Some(1),
        ..Default::default()
    };
    let outcome = train::run(&cfg, &options(&split, &cache), &mut b).expect("first half");
    assert_eq!(outcome, Outcome::Stopped(StopReason::Shutdown));
    assert_eq!(b.rows.len(), 1);
    assert!(
        (a.rows[0].train_loss - b.rows[0].train_loss).abs() < 1e-6,
        "same seed, different first-epoch loss"
    );

    let mut opts = options(&split, &cache);
    opts.resume = true;
    let mut c = RecordingSink::default();
    train::run(&cfg, &opts, &mut c).expect("resumed");
    assert_eq!(c.rows.len(), 1);
    assert_eq!(c.rows[0].epoch, 1);
    assert!(
        (a.rows[1].train_loss - c.rows[0].train_loss).abs() < 1e-6,
        "resumed epoch-2 loss {} vs uninterrupted {}",
        c.rows[0].train_loss,
        a.rows[1].train_loss
    );
    assert!((a.rows[1].train_lr - c.rows[0].train_lr).abs() < 1e-12);

    // Another seed draws other masks and weights.
    let other = config(
        "pretrain",
        &e.data,
        "epochs = 1\ntrain_subset = 256\nblr = 1e-3\nseed = 5",
    );
    let mut d = RecordingSink::default();
    train::run(&other, &options(&e.root.join("other"), &cache), &mut d).expect("other seed");
    assert!((a.rows[0].train_loss - d.rows[0].train_loss).abs() > 1e-6);
}

#[test]
fn finetuning_beats_chance_and_loads_a_pretrained_encoder() {
    let e = env();
    let cache = e.root.join("cache");
    // A one-epoch pretrain to start from.
    let pre = config("pretrain", &e.data, "epochs = 1\ntrain_subset = 128");
    let pre_dir = e.root.join("pre");
    train::run(
        &pre,
        &options(&pre_dir, &cache),
        &mut RecordingSink::default(),
    )
    .expect("pretrain");

    let ft = config(
        "finetune",
        &e.data,
        "epochs = 6\nwarmup_epochs = 1.0\nblr = 2e-3\nmixup = 0.0\ncutmix = 0.0\nreprob = 0.0\nlayer_decay = 0.9\nbatch_size = 32",
    );
    let mut opts = options(&e.root.join("ft"), &cache);
    opts.init_checkpoint = Some(pre_dir.join("checkpoint-last.safetensors"));
    let mut sink = RecordingSink::default();
    train::run(&ft, &opts, &mut sink).expect("finetune");
    let last = sink.rows.last().expect("rows");
    let acc1 = last.test_acc1.expect("acc1");
    assert!(
        acc1 > 40.0,
        "top-1 {acc1}% is not clearly above chance (10%)"
    );
    assert!(last.test_acc5.expect("acc5") >= acc1);
    assert!(last.test_loss.expect("test loss").is_finite());
    assert!(last.n_parameters > 0);
}

#[test]
fn checkpoints_of_another_preset_are_refused() {
    let e = env();
    let cache = e.root.join("cache");
    let small = config("pretrain", &e.data, "epochs = 1\ntrain_subset = 64");
    let dir = e.root.join("small");
    train::run(
        &small,
        &options(&dir, &cache),
        &mut RecordingSink::default(),
    )
    .expect("pretrain");

    // Resuming a run of another shape from this folder.
    let wider = config(
        "pretrain",
        &e.data,
        "epochs = 2\ntrain_subset = 64\nembed_dim = 64",
    );
    let mut opts = options(&dir, &cache);
    opts.resume = true;
    let err = train::run(&wider, &opts, &mut RecordingSink::default()).expect_err("must refuse");
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
    assert!(
        err.to_string().contains("embed_dim 32") && err.to_string().contains("embed_dim 64"),
        "{err}"
    );

    // Finetuning a wider encoder from it.
    let ft = config(
        "finetune",
        &e.data,
        "epochs = 1\ntrain_subset = 64\nembed_dim = 64",
    );
    let mut opts = options(&e.root.join("ft"), &cache);
    opts.init_checkpoint = Some(dir.join("checkpoint-last.safetensors"));
    let err = train::run(&ft, &opts, &mut RecordingSink::default()).expect_err("must refuse");
    assert!(err.to_string().contains("checkpoint-last.json"), "{err}");

    // Without the JSON, the tensor shapes still give it away.
    std::fs::remove_file(dir.join("checkpoint-last.json")).expect("rm");
    let err = train::run(&ft, &opts, &mut RecordingSink::default()).expect_err("must refuse");
    assert!(err.to_string().contains("has shape"), "{err}");
}

/// The real epoch loop, fed a loss that turns NaN at the third batch (no
/// valid config blows up reliably: lr is capped at 10).
#[test]
fn a_non_finite_loss_stops_the_run_with_a_reason_in_the_log() {
    use maelab_worker::data::{Augment, Loader, LoaderConfig, Split};
    use maelab_worker::train::epoch::train_epoch;
    use maelab_worker::train::optim::{AdamW, AdamWConfig};
    use tch::{Kind, Tensor, nn};

    let e = env();
    let cfg = config("pretrain", &e.data, "epochs = 1");
    let out = e.root.join("nan");
    std::fs::create_dir_all(&out).expect("dir");
    let ds = maelab_worker::data::open(
        e.data.to_str().expect("utf-8"),
        Split::Train,
        &e.root.join("cache"),
    )
    .expect("data");
    let loader = Loader::try_new(
        std::sync::Arc::new(ds),
        LoaderConfig {
            batch_size: 64,
            shuffle: false,
            drop_last: true,
            seed: 0,
            epoch: 0,
            augment: Augment::None,
            limit: None,
            threads: 1,
            prefetch: 1,
        },
    )
    .expect("loader");
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let w = vs.root().var("w", &[1], nn::Init::Const(1.0));
    let mut optim = AdamW::new(
        &vs,
        AdamWConfig {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.0,
            layer_decay: 1.0,
            depth: 1,
        },
    );
    let mut calls = 0;
    let mut forward = |_batch: &maelab_worker::data::Batch| {
        calls += 1;
        let scale = if calls == 3 { f64::NAN } else { 1.0 };
        (&w * scale).sum(Kind::Float) + Tensor::from(0.0f32)
    };
    let mut sink = train::FileSink::new(&out, 1, false).expect("sink");
    let opts = options(&out, &e.root.join("cache"));
    let err = match train_epoch(&cfg, &opts, 0, loader, &mut optim, &mut sink, &mut forward) {
        Err(err) => err,
        Ok(_) => panic!("a NaN loss must fail the epoch"),
    };
    assert!(
        matches!(err, TrainError::NonFiniteLoss { epoch: 0, step: 2 }),
        "{err}"
    );
    assert!(
        w.double_value(&[0]).is_finite(),
        "the NaN step must not reach the weights"
    );
    let log = read_log(&out);
    let last = log.last().expect("a line");
    assert!(
        last["error"]
            .as_str()
            .expect("error")
            .contains("not finite")
    );
    assert_eq!(last["step"], 2);
}

#[test]
fn bf16_autocast_trains_on_the_cpu_close_to_fp32_and_keeps_fp32_state() {
    let e = env();
    let run = |kind: &str, precision: &str| {
        let extra = format!(
            "epochs = 1\ntrain_subset = 256\ntest_subset = 64\nprecision = \"{precision}\""
        );
        let cfg = config(kind, &e.data, &extra);
        let out = e.root.join(format!("{kind}-{precision}"));
        let mut sink = RecordingSink::default();
        let outcome =
            train::run(&cfg, &options(&out, &e.root.join("cache")), &mut sink).expect(precision);
        assert_eq!(outcome, Outcome::Finished);
        let row = sink.rows.pop().expect("an epoch row");
        let tensors =
            checkpoint::read_tensors(&out.join(checkpoint::WEIGHTS_FILE)).expect("checkpoint");
        (row, tensors)
    };
    for kind in ["pretrain", "finetune"] {
        let (fp32, _) = run(kind, "fp32");
        let (bf16, tensors) = run(kind, "bf16");
        let (a, b) = (fp32.train_loss, bf16.train_loss);
        assert!(b.is_finite(), "{kind}: bf16 loss {b}");
        // Same seed, same batches: only the bf16 arithmetic differs, so the
        // losses differ (autocast was on) but little.
        assert_ne!(
            a, b,
            "{kind}: bf16 gave fp32's loss exactly; was autocast on?"
        );
        assert!(
            (a - b).abs() <= 0.01 * a.abs(),
            "{kind}: bf16 loss {b} vs fp32 {a}"
        );
        if let (Some(a), Some(b)) = (fp32.test_acc1, bf16.test_acc1) {
            assert!(
                b.is_finite() && (a - b).abs() <= 10.0,
                "{kind}: acc1 {b} vs {a}"
            );
        }
        // Master weights and AdamW's moments stay fp32.
        assert!(tensors.keys().any(|n| n.starts_with("optim.exp_avg_sq.")));
        for (name, t) in &tensors {
            assert_eq!(t.kind(), tch::Kind::Float, "{kind}: {name}");
        }
    }
}

#[test]
fn a_bad_wave_config_and_unknown_devices_are_refused_before_training() {
    let e = env();
    // bf16 where libtorch has no autocast: refused, naming the field.
    let cfg = config("pretrain", &e.data, "precision = \"bf16\"");
    let mut opts = options(&e.root.join("a"), &e.root.join("cache"));
    opts.device = tch::Device::Mps;
    let err = train::run(&cfg, &opts, &mut RecordingSink::default()).expect_err("bf16 on mps");
    assert!(matches!(err, TrainError::Bf16Unsupported(_)), "{err}");
    assert!(err.to_string().contains("precision"), "{err}");
    // Wave-MAE trains (tests/wave_mae.rs); a wave_sr that does not divide the
    // DWT grid (8x8 tokens -> 4x4) is refused before training.
    let mut cfg = config("pretrain", &e.data, "model = \"wave_mae\"");
    cfg.wave_sr = 3;
    let err = train::run(
        &cfg,
        &options(&e.root.join("b"), &e.root.join("cache")),
        &mut RecordingSink::default(),
    )
    .expect_err("wave");
    assert!(err.to_string().contains("wave"), "{err}");
    assert!(train::parse_device("gpu").is_err());
    assert!(train::parse_device("cuda:7").is_err());
    assert_eq!(train::parse_device("cpu").expect("cpu"), tch::Device::Cpu);
}
