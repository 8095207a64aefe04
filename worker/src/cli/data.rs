//! `maelab-worker data`: fetch the official CIFAR-10 release, or decode a
//! dataset into the cache ahead of the first run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::data::{self, Augment, FinetuneAugment, Loader, LoaderConfig, Split};

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
    /// Also time one epoch of the finetune loader (the heaviest augmentation)
    /// over the training split on this many threads.
    #[arg(long, value_name = "THREADS")]
    time_loader: Option<usize>,
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
    let mut train = None;
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
        if split == Split::Train {
            train = Some(ds);
        }
    }
    if let (Some(threads), Some(ds)) = (args.time_loader, train) {
        time_loader(ds, threads)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One epoch of finetune batches (crop, flip, erasing, mixup/cutmix) at
/// batch 128, to show whether the loader can keep up with training.
fn time_loader(ds: data::Dataset, threads: usize) -> anyhow::Result<()> {
    let num_classes = ds.classes.len();
    let images = ds.len();
    let cfg = LoaderConfig {
        batch_size: 128,
        shuffle: true,
        drop_last: false,
        seed: 0,
        epoch: 0,
        augment: Augment::Finetune(FinetuneAugment::recipe(num_classes)),
        limit: None,
        threads,
        prefetch: 4,
    };
    let started = Instant::now();
    let loader = Loader::try_new(std::sync::Arc::new(ds), cfg).context("starting the loader")?;
    let batches = loader.count();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loader: {batches} finetune batches of 128 on {threads} threads in {secs:.2}s ({:.0} images/s)",
        images as f64 / secs
    );
    Ok(())
}
