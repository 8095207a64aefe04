//! `maelab-worker bench`: images/second of full training steps (forward,
//! backward, AdamW) on synthetic data, and peak memory. The PyTorch eager
//! reference of the same architecture is benches/pytorch_mae.py.

use std::process::ExitCode;

use maelab_core::config::{ModelKind, RunConfig, RunConfigInput, RunKind, WaveIn};

use crate::train::throughput;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Pretrain,
    Finetune,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Model {
    Mae,
    #[value(name = "wave_mae")]
    WaveMae,
}

/// `wave_in` of a Wave-MAE bench (ml.md, "Wave-MAE").
#[derive(Clone, Copy, clap::ValueEnum)]
enum WaveInArg {
    Encoder,
    Decoder,
    Both,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "mae")]
    model: Model,
    /// Where Wave-MAE's wavelet attention goes (with --model wave-mae).
    #[arg(long, value_enum, default_value = "decoder")]
    wave_in: WaveInArg,
    #[arg(long, default_value = "vit-tiny/4")]
    preset: String,
    #[arg(long, value_enum, default_value = "pretrain")]
    mode: Mode,
    #[arg(long, default_value_t = 128)]
    batch: u32,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: u32,
    /// Untimed steps first (allocator and kernel warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
    /// Pretraining with the frequency-aware loss at this weight (`hf_loss_weight`).
    #[arg(long, default_value_t = 0.0)]
    hf_loss_weight: f64,
}

/// Peak resident memory of this process in MiB (VmHWM), Linux only.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let (model, wave_in) = match args.model {
        Model::Mae => (ModelKind::Mae, None),
        Model::WaveMae => (
            ModelKind::WaveMae,
            Some(match args.wave_in {
                WaveInArg::Encoder => WaveIn::Encoder,
                WaveInArg::Decoder => WaveIn::Decoder,
                WaveInArg::Both => WaveIn::Both,
            }),
        ),
    };
    let kind = match args.mode {
        Mode::Pretrain => RunKind::Pretrain,
        Mode::Finetune => RunKind::Finetune,
    };
    let config = RunConfig::resolve(RunConfigInput {
        kind: Some(kind),
        model: Some(model),
        wave_in,
        preset: Some(args.preset.clone()),
        batch_size: Some(args.batch),
        hf_loss_weight: Some(args.hf_loss_weight),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let device = crate::train::parse_device(&args.device)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n.max(1) as i32);
    }
    let measured = throughput::measure(&config, device, args.warmup, args.steps)?;
    let (ips, seconds, loss) = (
        measured.images_per_second,
        measured.seconds,
        measured.last_loss,
    );
    let mode = match args.mode {
        Mode::Pretrain => "pretrain",
        Mode::Finetune => "finetune",
    };
    println!(
        "model {}{} preset {} mode {mode} batch {} steps {} device {} threads {}",
        config.model.as_str(),
        config
            .wave_in
            .map(|w| format!(" wave_in {w:?}").to_lowercase())
            .unwrap_or_default(),
        args.preset,
        args.batch,
        args.steps,
        args.device,
        tch::get_num_threads()
    );
    println!("n_parameters {}", measured.n_parameters);
    println!("images_per_second {ips:.1}");
    println!(
        "seconds_per_step {:.3}",
        seconds / f64::from(args.steps.max(1))
    );
    println!("last_loss {loss:.4}");
    match peak_rss_mib() {
        Some(mib) => println!("peak_rss_mib {mib:.0}"),
        None => println!("peak_rss_mib unavailable"),
    }
    if device.is_cuda() {
        println!("cuda_peak_memory unavailable through tch (use nvidia-smi)");
    }
    Ok(ExitCode::SUCCESS)
}
