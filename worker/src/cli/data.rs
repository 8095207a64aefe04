//! `maelab-worker data`: fetch the official CIFAR-10 release, or decode a
//! dataset into the cache ahead of the first run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::data::{self, Split};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Download a dataset's official release and verify its checksum.
    Download(DownloadArgs),
    /// Decode a dataset into the cache and print image counts and timings.
    Prepare(PrepareArgs),
}

/// Datasets `download` knows.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Downloadable {
    /// The official binary release (cifar-10-binary.tar.gz, 163 MB).
    Cifar10,
}

#[derive(clap::Args)]
pub struct DownloadArgs {
    dataset: Downloadable,
    /// Folder for the unpacked files (default: cifar-10-batches-bin in the cache dir).
    #[arg(long)]
    dest: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// `cifar10`, a CIFAR-10 binary folder, an ImageFolder tree or a .tar.gz of one.
    spec: String,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(clap::Args)]
struct CacheArgs {
    /// Where decoded datasets are cached.
    #[arg(long, env = data::CACHE_DIR_ENV, default_value = ".maelab/cache")]
    cache_dir: PathBuf,
}

pub fn main(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Download(args) => download(args),
        Command::Prepare(args) => prepare(args),
    }
}

fn download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    match args.dataset {
        Downloadable::Cifar10 => {
            let dest = args
                .dest
                .unwrap_or_else(|| args.cache.cache_dir.join("cifar-10-batches-bin"));
            let files = data::download::download_cifar10(&dest)
                .context("fetching the CIFAR-10 binary release")?;
            println!("{} files in {}", files.len(), dest.display());
            println!("use it as the dataset: {}", dest.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(args: PrepareArgs) -> anyhow::Result<ExitCode> {
    for split in [Split::Train, Split::Test] {
        let started = Instant::now();
        let (ds, info) = data::open_with_info(&args.spec, split, &args.cache.cache_dir)
            .with_context(|| format!("preparing the {split} split of `{}`", args.spec))?;
        let counts = ds
            .classes
            .iter()
            .zip(ds.class_counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{split}: {} images of {}x{} in {:.2}s ({}, {})",
            ds.len(),
            ds.height,
            ds.width,
            started.elapsed().as_secs_f64(),
            if info.from_cache {
                "from cache"
            } else {
                "decoded"
            },
            info.cache_file.display(),
        );
        println!("  classes: {counts}");
    }
    Ok(ExitCode::SUCCESS)
}
