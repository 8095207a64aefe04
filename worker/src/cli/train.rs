//! `maelab-worker train`: one run from a TOML config, without the server.
//! Output in `--out`: log.txt, checkpoint-last.*, recon PNGs, the resolved
//! config; a progress line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use maelab_core::config::RunConfig;

use crate::train::{self, FileSink, Outcome, TrainOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The run config (TOML; unknown keys are errors).
    #[arg(long)]
    config: PathBuf,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Continue from `OUT/checkpoint-last.*` when present.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads for torch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// Threads building augmented batches (when the data stays on the host).
    #[arg(long, default_value_t = 2)]
    loader_threads: usize,
    /// Put the decoded training set on the device and augment there: auto
    /// (when it fits 2 GiB), on, or off (the CPU loader).
    #[arg(long, default_value = "auto")]
    data_on_device: crate::data::DataOnDevice,
    /// Finetune: the pretrain checkpoint (safetensors) to load the encoder from.
    #[arg(long)]
    init_checkpoint: Option<PathBuf>,
    /// Where decoded datasets are cached (default `$MAELAB_CACHE_DIR` or .maelab/cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    // Every bad field is reported (named) before anything starts.
    let config = RunConfig::from_toml_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let device = train::parse_device(&args.device)?;
    if let Some(init) = &args.init_checkpoint
        && !init.is_file()
    {
        anyhow::bail!("--init-checkpoint {}: file not found", init.display());
    }
    let mut sink = FileSink::new(&args.out, config.epochs, true)?;
    let resolved = args.out.join("run-config.json");
    std::fs::write(&resolved, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", resolved.display()))?;
    let opts = TrainOptions {
        out_dir: args.out.clone(),
        device,
        threads: args.threads,
        loader_threads: args.loader_threads,
        data_on_device: args.data_on_device,
        resume: args.resume,
        init_checkpoint: args.init_checkpoint,
        cache_dir: args
            .cache_dir
            .unwrap_or_else(crate::data::default_cache_dir),
    };
    tracing::info!(name = %config.name, kind = config.kind.as_str(), preset = %config.preset, "training");
    match train::run(&config, &opts, &mut sink).context("training")? {
        Outcome::Finished => Ok(ExitCode::SUCCESS),
        Outcome::Stopped(reason) => {
            eprintln!("stopped: {reason:?}");
            Ok(ExitCode::from(3))
        }
    }
}
