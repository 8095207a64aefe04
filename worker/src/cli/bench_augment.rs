//! `maelab-worker bench-augment`: augmented images per second of the two data
//! paths, on synthetic 32x32 images (the cost does not depend on content):
//! the CPU loader's threads, and the batched tensor ops of the device path.

use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};

use crate::data::device::{DeviceBatches, DeviceSet};
use crate::data::{Augment, Dataset, FinetuneAugment, Loader, LoaderConfig};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Path {
    /// Batched tensor ops on `--device` (torch threads: `--threads`).
    Device,
    /// The CPU loader (loader threads: `--threads`).
    Loader,
    Both,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// RandomResizedCrop(0.2, 1) + flip.
    Pretrain,
    /// Crop, flip, random erasing, mixup/cutmix, smoothing (the recipe).
    Finetune,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "both")]
    path: Path,
    #[arg(long, value_enum, default_value = "pretrain")]
    mode: Mode,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed batches per path.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Images in the synthetic set (CIFAR-10's training split has 50000).
    #[arg(long, default_value_t = 50_000)]
    images: usize,
    /// Threads: torch's for the device path, loader threads for the loader.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.batches > 0, "--batches must be at least 1");
    let threads = args.threads.max(1);
    let device = crate::train::parse_device(&args.device)?;
    let ds = synthetic(args.images, 32);
    let augment = match args.mode {
        Mode::Pretrain => Augment::pretrain(),
        Mode::Finetune => Augment::Finetune(FinetuneAugment::recipe(10)),
    };
    let cfg = LoaderConfig {
        batch_size: args.batch,
        shuffle: true,
        drop_last: true,
        seed: 0,
        epoch: 0,
        augment,
        limit: None,
        threads,
        prefetch: 2 * threads,
    };
    // One untimed batch first, then the timed ones (an epoch is long enough:
    // 50000 images are 390 batches of 128).
    let timed = |batches: &mut dyn Iterator<Item = crate::data::Batch>| -> anyhow::Result<(f64, Option<f64>)> {
        batches.next().context("no batch to warm up with")?;
        let (start, cpu_start) = (Instant::now(), cpu_seconds());
        let mut last = None;
        for _ in 0..args.batches {
            last = Some(batches.next().context("the set has too few batches")?);
        }
        // Reading a value waits for a GPU to finish the queued work.
        if let Some(b) = last {
            b.images.double_value(&[0, 0, 0, 0]);
        }
        let images = (args.batches * args.batch) as f64;
        let cpu = cpu_seconds().zip(cpu_start).map(|(end, begin)| end - begin);
        Ok((
            images / start.elapsed().as_secs_f64(),
            cpu.map(|s| images / s.max(1e-9)),
        ))
    };
    let mode = match args.mode {
        Mode::Pretrain => "pretrain",
        Mode::Finetune => "finetune",
    };
    println!(
        "mode {mode} batch {} batches {} threads {threads} device {} load_average {}",
        args.batch,
        args.batches,
        args.device,
        load_average()
    );
    if matches!(args.path, Path::Device | Path::Both) {
        tch::set_num_threads(threads as i32);
        let set = Rc::new(DeviceSet::upload(&ds, device)?);
        let measured = timed(&mut DeviceBatches::try_new(set, cfg.clone())?)?;
        report("device", measured, threads);
    }
    if matches!(args.path, Path::Loader | Path::Both) {
        // The loader's threads do the work; torch only wraps the buffers.
        tch::set_num_threads(1);
        let measured = timed(&mut Loader::try_new(Arc::new(ds), cfg)?)?;
        report("loader", measured, threads);
    }
    Ok(ExitCode::SUCCESS)
}

/// Wall-clock rate, and the rate per second of CPU time this process used
/// (all threads): what one core does, whatever else shares the machine.
fn report(path: &str, (ips, per_cpu): (f64, Option<f64>), threads: usize) {
    let per_cpu = per_cpu.map_or_else(|| "unavailable".into(), |v| format!("{v:.0}"));
    println!(
        "path {path} images_per_second {ips:.0} per_thread {:.0} images_per_cpu_second {per_cpu}",
        ips / threads as f64
    );
}

/// User + system CPU time of this process so far (Linux, 100 ticks/s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `n` seeded random images of `side x side`.
fn synthetic(n: usize, side: usize) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut images = vec![0u8; n * side * side * 3];
    rng.fill(&mut images[..]);
    Dataset {
        images,
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        height: side,
        width: side,
        classes: (0..10).map(|i| i.to_string()).collect(),
    }
}

/// The 1-minute load average, for benchmark notes on a shared machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unavailable".into())
}
