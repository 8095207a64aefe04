//! `maelab-worker bench`: images/second of full training steps (forward,
//! backward, AdamW) on synthetic data, peak memory, and the fraction of the
//! machine's fp32 matmul rate the steps' matmuls reach. The PyTorch eager
//! reference of the same architecture is benches/pytorch_mae.py.

use std::process::ExitCode;

use maelab_core::config::{ModelKind, Precision, RunConfig, RunConfigInput, RunKind, WaveIn};

use crate::model::flops::{train_flops_per_image, weight_matmuls};
use crate::torch_ext::LinearBackend;
use crate::train::matmul_limit::{self, MatmulRates};
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

/// `precision` of the benched steps (the run config's field).
#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Fp32,
    /// libtorch's bf16 autocast around the forward pass (train/autocast.rs).
    Bf16,
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
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,
    #[arg(long)]
    threads: Option<usize>,
    /// Pretraining with the frequency-aware loss at this weight (`hf_loss_weight`).
    #[arg(long, default_value_t = 0.0)]
    hf_loss_weight: f64,
    /// What fp32 Linear layers on the CPU run on: oneDNN's matmul or
    /// libtorch's `linear` (MKL's sgemm), for side-by-side measurements; by
    /// default the faster for this CPU's vendor (oneDNN except on Intel).
    #[arg(long, value_enum, default_value = "auto")]
    linear: LinearArg,
    /// What fp32 self-attention on the CPU runs on: oneDNN's batched matmul
    /// (the default, where it works) or libtorch's
    /// `scaled_dot_product_attention` (its flash kernel).
    #[arg(long, value_enum, default_value = "onednn")]
    attention: AttentionArg,
    /// Skip the matmul-limit measurements after the steps, so that a
    /// profiler attached to the whole process sees only training steps.
    #[arg(long)]
    no_limits: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AttentionArg {
    Onednn,
    Sdpa,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LinearArg {
    Auto,
    Onednn,
    Libtorch,
}

/// The 2048^3 fp32 matmul's rate and what fraction of the faster one the
/// steps' matmul FLOPs reach (`crate::model::flops` says what is counted);
/// then the rate of the step's own matmuls alone and the fraction of it the
/// step reaches, which says how much of the gap is the work between them.
fn print_matmul_limit(
    config: &RunConfig,
    images_per_second: f64,
    rates: &MatmulRates,
    shape_gflops: Option<f64>,
) {
    let side = matmul_limit::SIDE;
    println!(
        "matmul_{side}_gflops libtorch {:.1} onednn {}",
        rates.libtorch,
        rates
            .onednn
            .map_or_else(|| "unavailable".to_string(), |r| format!("{r:.1}"))
    );
    let Some(flops) = train_flops_per_image(config) else {
        println!("gflop_per_image unavailable (wavelet attention is not counted)");
        return;
    };
    let achieved = images_per_second * flops / 1e9;
    println!("gflop_per_image {:.3}", flops / 1e9);
    println!("achieved_gflops {achieved:.1}");
    println!(
        "matmul_limit_fraction {:.3} (of the faster matmul; of libtorch's {:.3})",
        achieved / rates.best().max(1e-9),
        achieved / rates.libtorch.max(1e-9)
    );
    match shape_gflops {
        Some(g) => {
            println!("shape_matmul_gflops {g:.1} (the step's own matmuls alone, at their shapes)");
            println!("shape_limit_fraction {:.3}", achieved / g.max(1e-9));
        }
        None => println!("shape_matmul_gflops unavailable"),
    }
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
        precision: Some(match args.precision {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let device = crate::train::parse_device(&args.device)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n.max(1) as i32);
    }
    crate::torch_ext::set_linear_backend(match args.linear {
        LinearArg::Auto => LinearBackend::Auto,
        LinearArg::Onednn => LinearBackend::OneDnn,
        LinearArg::Libtorch => LinearBackend::Libtorch,
    });
    crate::torch_ext::set_onednn_attention(args.attention == AttentionArg::Onednn);
    let measured = throughput::measure(&config, device, args.warmup, args.steps)?;
    // After the steps, so it shares their conditions without disturbing them.
    let limits = (!args.no_limits).then(|| {
        let matmul = matmul_limit::measure(device);
        let shape_gflops = weight_matmuls(&config)
            .and_then(|m| matmul_limit::shape_rate(device, &m, i64::from(args.batch)));
        (matmul, shape_gflops)
    });
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
        "model {}{} preset {} mode {mode} batch {} steps {} device {} precision {} threads {}",
        config.model.as_str(),
        config
            .wave_in
            .map(|w| format!(" wave_in {w:?}").to_lowercase())
            .unwrap_or_default(),
        args.preset,
        args.batch,
        args.steps,
        args.device,
        match config.precision {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        },
        tch::get_num_threads()
    );
    println!("n_parameters {}", measured.n_parameters);
    println!("images_per_second {ips:.1}");
    println!(
        "seconds_per_step {:.3}",
        seconds / f64::from(args.steps.max(1))
    );
    println!("last_loss {loss:.4}");
    match &limits {
        Some((matmul, shape_gflops)) => print_matmul_limit(&config, ips, matmul, *shape_gflops),
        None => println!("matmul_limit skipped (--no-limits)"),
    }
    match peak_rss_mib() {
        Some(mib) => println!("peak_rss_mib {mib:.0}"),
        None => println!("peak_rss_mib unavailable"),
    }
    if device.is_cuda() {
        println!("cuda_peak_memory unavailable through tch (use nvidia-smi)");
    }
    Ok(ExitCode::SUCCESS)
}
