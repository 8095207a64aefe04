//! `maelab-worker bench-store`: the worker's side of issue 13's memory bar.
//! A checkpoint-sized file (random bytes, written in chunks) is uploaded with
//! the call the worker stores checkpoints with (`ArtifactStore::put_file`) and
//! downloaded back with the one it resumes and finetunes from
//! (`ArtifactStore::download_to_file`, sha256 checked). For each phase it
//! prints the throughput and how far this process's peak RSS (the kernel's
//! VmHWM, reset before each phase) rose above its RSS before the phase: a
//! streaming path stays flat, a buffering one grows by the file's size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use maelab_core::artifact_store::{ArtifactStore, key};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store: a local directory (default: a fresh one under the temporary
    /// folder, removed at the end), `file://…` or `s3://bucket/prefix` (AWS_*
    /// environment).
    #[arg(long)]
    pub store: Option<String>,
    /// Size of the checkpoint, in MB (10^6 bytes).
    #[arg(long, default_value_t = 200)]
    pub size_mb: u64,
    /// Upload/download rounds; the best throughput and the highest growth are printed.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.size_mb > 0, "--size-mb: must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds: must be at least 1");
    let work = std::env::temp_dir().join(format!("maelab-bench-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = run(&args, &work);
    if let Err(e) = std::fs::remove_dir_all(&work) {
        tracing::warn!(path = %work.display(), error = %e, "could not remove the bench folder");
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn run(args: &Args, work: &Path) -> anyhow::Result<()> {
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| work.join("store").display().to_string());
    let store = ArtifactStore::open(&url, &[]).with_context(|| format!("opening {url}"))?;
    let source = work.join("checkpoint.bin");
    let sha256 = write_random(&source, args.size_mb * 1_000_000)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let run_id = uuid::Uuid::new_v4();
    let bytes = args.size_mb as f64 * 1e6;
    println!(
        "store {url} size_mb {} rounds {} rss_before_mib {:.1}",
        args.size_mb,
        args.rounds,
        kib("VmRSS")? as f64 / 1024.0
    );
    let (mut up_best, mut down_best, mut up_growth, mut down_growth) = (0f64, 0f64, 0i64, 0i64);
    for round in 1..=args.rounds {
        let name = format!("checkpoint-e{round:04}.safetensors");
        let object_key = key::new_key(run_id, &name)?;

        let (before, started) = (reset_peak()?, Instant::now());
        let stored = rt
            .block_on(store.put_file(&object_key, &source))
            .context("uploading")?;
        let up_s = started.elapsed().as_secs_f64();
        let up = kib("VmHWM")? - before;
        anyhow::ensure!(
            stored.sha256 == sha256,
            "the store hashed the upload differently"
        );

        let target = work.join("back.bin");
        let (before, started) = (reset_peak()?, Instant::now());
        let size = rt
            .block_on(store.download_to_file(&object_key, &sha256, &target))
            .context("downloading")?;
        let down_s = started.elapsed().as_secs_f64();
        let down = kib("VmHWM")? - before;
        anyhow::ensure!(size == args.size_mb * 1_000_000, "downloaded {size} bytes");
        rt.block_on(store.delete(&object_key)).context("deleting")?;
        std::fs::remove_file(&target).ok();

        println!(
            "round {round} upload_mb_per_s {:.0} upload_rss_growth_mib {:.1} download_mb_per_s {:.0} download_rss_growth_mib {:.1}",
            bytes / 1e6 / up_s,
            up as f64 / 1024.0,
            bytes / 1e6 / down_s,
            down as f64 / 1024.0
        );
        up_best = up_best.max(bytes / 1e6 / up_s);
        down_best = down_best.max(bytes / 1e6 / down_s);
        up_growth = up_growth.max(up);
        down_growth = down_growth.max(down);
    }
    println!(
        "best upload_mb_per_s {up_best:.0} download_mb_per_s {down_best:.0}; highest rss_growth_mib upload {:.1} download {:.1}",
        up_growth as f64 / 1024.0,
        down_growth as f64 / 1024.0
    );
    Ok(())
}

/// Write `size` random bytes to `path` in 1 MiB chunks; returns their sha256.
fn write_random(path: &PathBuf, size: u64) -> anyhow::Result<String> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        rand::thread_rng().fill_bytes(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        file.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    file.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// A field of /proc/self/status, in KiB.
fn kib(field: &str) -> anyhow::Result<i64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// Reset the peak (VmHWM) to the current RSS and return it.
fn reset_peak() -> anyhow::Result<i64> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS (clear_refs)")?;
    kib("VmRSS")
}
