//! Shared by the `train_*` tests: a small synthetic dataset in the official
//! CIFAR-10 binary format whose classes differ in colour and stripe frequency
//! (learnable in a few epochs), tiny run configs, and a sink that records.
#![allow(dead_code)]

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use maelab_core::config::RunConfig;
use maelab_worker::events::{Checkpoint, Control, EpochRow, Image, Sink, StepSample, StopReason};
use maelab_worker::train::TrainOptions;
use rand::{Rng, SeedableRng};

/// One record: label byte, then 1024 R, 1024 G, 1024 B bytes.
fn record(class: u8, rng: &mut impl Rng) -> Vec<u8> {
    let c = f64::from(class);
    let (fx, fy) = ((class % 4) as f64 + 1.0, (class / 4) as f64);
    let phase = rng.r#gen::<f64>() * 2.0 * PI;
    let mut out = vec![class];
    for ch in 0..3 {
        let tint = ((c + 1.0) * (ch as f64 + 1.0) * 0.7).sin() * 60.0;
        for y in 0..32 {
            for x in 0..32 {
                let wave = (2.0 * PI * (fx * x as f64 + fy * y as f64) / 32.0 + phase).sin();
                let v = 128.0 + tint + 50.0 * wave + rng.r#gen::<f64>() * 20.0 - 10.0;
                out.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Write `per_file` images into each of the five train files and `test`
/// images into the test file, classes round-robin.
pub fn write_dataset(dir: &Path, per_file: usize, test: usize) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    std::fs::create_dir_all(dir).expect("dataset dir");
    for i in 1..=5 {
        let bytes: Vec<u8> = (0..per_file)
            .flat_map(|k| record((k % 10) as u8, &mut rng))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), bytes).expect("write");
    }
    let bytes: Vec<u8> = (0..test)
        .flat_map(|k| record((k % 10) as u8, &mut rng))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).expect("write");
    dir.to_path_buf()
}

/// A tiny model on `dataset`; `extra` TOML lines (`key = value`) override
/// the defaults here or add to them.
pub fn config(kind: &str, dataset: &Path, extra: &str) -> RunConfig {
    let dataset = format!("\"{}\"", dataset.display());
    let mut lines: Vec<(String, String)> = [
        ("kind", format!("\"{kind}\"")),
        ("preset", "\"vit-micro/4\"".to_string()),
        ("embed_dim", "32".to_string()),
        ("depth", "2".to_string()),
        ("num_heads", "2".to_string()),
        ("decoder_embed_dim", "32".to_string()),
        ("decoder_depth", "1".to_string()),
        ("decoder_num_heads", "2".to_string()),
        ("dataset", dataset),
        ("batch_size", "64".to_string()),
        ("warmup_epochs", "1.0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match lines.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => lines.push((k, v)),
        }
    }
    let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    RunConfig::from_toml_str(&text).expect("test config")
}

pub fn options(out_dir: &Path, cache_dir: &Path) -> TrainOptions {
    TrainOptions {
        out_dir: out_dir.to_path_buf(),
        device: tch::Device::Cpu,
        threads: Some(1),
        loader_threads: 1,
        data_on_device: maelab_worker::data::DataOnDevice::Auto,
        resume: false,
        init_checkpoint: None,
        cache_dir: cache_dir.to_path_buf(),
    }
}

/// Records every event; can ask to stop after a given number of checkpoints.
#[derive(Default)]
pub struct RecordingSink {
    pub rows: Vec<EpochRow>,
    pub steps: Vec<StepSample>,
    pub images: Vec<Image>,
    pub checkpoints: Vec<Checkpoint>,
    pub stop_after_checkpoints: Option<usize>,
}

impl Sink for RecordingSink {
    fn epoch(&mut self, row: &EpochRow) -> anyhow::Result<Control> {
        self.rows.push(row.clone());
        Ok(Control::Continue)
    }
    fn step(&mut self, sample: &StepSample) -> anyhow::Result<Control> {
        self.steps.push(sample.clone());
        Ok(Control::Continue)
    }
    fn image(&mut self, image: &Image) -> anyhow::Result<Control> {
        self.images.push(image.clone());
        Ok(Control::Continue)
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<Control> {
        self.checkpoints.push(checkpoint.clone());
        match self.stop_after_checkpoints {
            Some(n) if self.checkpoints.len() >= n => Ok(Control::Stop(StopReason::Shutdown)),
            _ => Ok(Control::Continue),
        }
    }
}

/// libtorch's default generator and thread count are process-wide, and the
/// tests of one file run on parallel threads: a test drawing from the
/// generator between another's `manual_seed` and its weight init breaks "same
/// seed, same weights" for reasons no real run can hit (one training per
/// process). Tests that seed libtorch, or draw from it, hold this throughout.
pub fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_GLOBALS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_GLOBALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
