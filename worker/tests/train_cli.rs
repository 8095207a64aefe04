//! The `train` and `bench` commands as a person runs them: bad configs and
//! missing data are refused before training, naming the field or the file; a
//! tiny run writes log.txt in the MAE format, a reconstruction PNG and a
//! checkpoint; `bench` prints its throughput.

mod train_support;

use std::path::Path;
use std::process::{Command, Output};

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run maelab-worker")
}

fn train(config: &Path, out: &Path) -> Output {
    // The decode cache goes beside the output, not into the crate folder.
    let cache = out.with_extension("cache");
    let cache = cache.to_str().expect("utf-8");
    let (config, out) = (
        config.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    );
    worker(&[
        "train",
        "--cache-dir",
        cache,
        "--config",
        config,
        "--out",
        out,
        "--threads",
        "1",
        "--loader-threads",
        "1",
    ])
}

const TINY: &str = "preset = \"vit-micro/4\"\nembed_dim = 32\ndepth = 2\nnum_heads = 2\n\
                    decoder_embed_dim = 32\ndecoder_depth = 1\ndecoder_num_heads = 2\n\
                    batch_size = 32\nepochs = 1\nwarmup_epochs = 0.5\n";

#[test]
fn bad_configs_are_refused_before_training_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, field) in [
        ("mask_ratoi = 0.5", "mask_ratoi"),
        ("patch_size = 5", "patch_size"),
        ("mask_ratio = 1.5", "mask_ratio"),
        ("batch_size = 0", "batch_size"),
        ("epochs = \"many\"", "epochs"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).expect("write config");
        let out_dir = dir.path().join("out");
        let out = train(&config, &out_dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(stderr.contains(field), "{text}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !out_dir.join("log.txt").exists(),
            "{text}: training started"
        );
    }
}

#[test]
fn a_missing_dataset_is_named_before_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-cifar");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!("{TINY}dataset = \"{}\"\n", missing.display()),
    )
    .expect("write");
    let out = train(&config, &dir.path().join("out"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-cifar"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_tiny_run_writes_the_mae_log_a_png_and_a_checkpoint_and_bench_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = train_support::write_dataset(&dir.path().join("cifar"), 32, 32);
    let config = dir.path().join("run.toml");
    std::fs::write(&config, format!("{TINY}dataset = \"{}\"\n", data.display())).expect("write");
    let out_dir = dir.path().join("out");
    let out = train(&config, &out_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = std::fs::read_to_string(out_dir.join("log.txt")).expect("log.txt");
    let rows: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1);
    for key in [
        "train_lr",
        "train_loss",
        "epoch",
        "n_parameters",
        "epoch_seconds",
        "images_per_second",
    ] {
        assert!(rows[0].get(key).is_some(), "{key} missing from {}", rows[0]);
    }
    assert!(rows[0]["train_loss"].as_f64().is_some_and(f64::is_finite));
    assert!(out_dir.join("checkpoint-last.safetensors").is_file());
    let png = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".png"))
        .expect("a reconstruction png");
    let bytes = std::fs::read(png.path()).expect("png");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));

    let bench = worker(&[
        "bench",
        "--model",
        "mae",
        "--preset",
        "vit-micro/4",
        "--mode",
        "pretrain",
        "--batch",
        "8",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let per_step: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("seconds_per_step "))
        .and_then(|v| v.trim().parse().ok())
        .expect("seconds_per_step line");
    assert!(per_step > 0.0, "{stdout}");
}
