//! The worker's data pipeline: reading CIFAR-10 (official binary files,
//! ImageFolder trees, `.tar.gz` archives of them) into memory through a
//! content-addressed cache, and loading augmented, normalised batches on
//! background threads while the model trains, or, when the decoded set fits,
//! from a copy on the training device augmented there ([`device`]).
//!
//! Augmentation follows MAE (<https://github.com/facebookresearch/mae>):
//! RandomResizedCrop + flip for pretraining; crop, flip, random erasing,
//! mixup/cutmix and label smoothing (timm) for finetuning.

mod archive;
pub mod augment;
mod cache;
pub mod cifar_bin;
mod dataset;
mod decode;
pub mod device;
pub mod download;
mod draw;
mod error;
mod image_folder;
mod loader;
pub mod mixup;
mod rng;
mod source;
mod train_set;

use std::path::{Path, PathBuf};

pub use augment::{CROP_RATIO, FINETUNE_CROP_SCALE, PRETRAIN_CROP_SCALE};
pub use dataset::{Dataset, Split};
pub use draw::Draw;
pub use error::DataError;
pub use loader::{Augment, Batch, FinetuneAugment, Loader, LoaderConfig, to_tensor};
pub use source::{CIFAR10_DEFAULT, CIFAR10_ENV, Source, resolve_spec};
pub use train_set::{Batches, DEVICE_DATA_BUDGET, DataOnDevice, TrainSet};

/// CIFAR-10's per-channel mean of pixel values in [0, 1].
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10's per-channel standard deviation of pixel values in [0, 1].
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// The environment variable that overrides [`default_cache_dir`].
pub const CACHE_DIR_ENV: &str = "MAELAB_CACHE_DIR";

/// Where decoded datasets are cached: `$MAELAB_CACHE_DIR`, else
/// `.maelab/cache` under the working directory (ignored by git).
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os(CACHE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(".maelab/cache"), PathBuf::from)
}

/// How [`open_with_info`] got its dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    pub source: Source,
    /// Hex sha256 of the source content the cache is keyed by.
    pub key: String,
    pub cache_file: PathBuf,
    /// True when the images came from the cache, false when they were decoded.
    pub from_cache: bool,
}

/// Open one split of a dataset.
///
/// `spec` is `cifar10` (the path in `$MAELAB_CIFAR10`, default
/// `../shared/data/cifar10-jpeg.tar.gz`), a folder with the official binary
/// files (`data_batch_1..5.bin`, `test_batch.bin`, optional
/// `batches.meta.txt`), an ImageFolder tree (`train/<class>/*.jpg|png`,
/// `test/<class>/...`), or a `.tar.gz` / `.tgz` of such a tree (optionally
/// inside one top-level folder). Decoded once into a cache in `cache_dir`
/// keyed by the content hash (sha256 of the archive bytes; of the file list
/// and contents for folders), so later opens skip decoding.
pub fn open(spec: &str, split: Split, cache_dir: &Path) -> Result<Dataset, DataError> {
    open_with_info(spec, split, cache_dir).map(|(ds, _)| ds)
}

/// [`open`], also saying where the data came from.
pub fn open_with_info(
    spec: &str,
    split: Split,
    cache_dir: &Path,
) -> Result<(Dataset, OpenInfo), DataError> {
    let path = resolve_spec(spec);
    let source = Source::detect(&path)?;
    let raw = source.read(split)?;
    let cache_file = cache::cache_path(cache_dir, &raw.key, split);
    let mut info = OpenInfo {
        source,
        key: raw.key.clone(),
        cache_file,
        from_cache: true,
    };
    if let Some(ds) = cache::load(&info.cache_file)? {
        tracing::debug!(path = %info.cache_file.display(), images = ds.len(), "dataset cache hit");
        return Ok((ds, info));
    }
    info.from_cache = false;
    let ds = raw.decode()?;
    if ds.is_empty() {
        return Err(DataError::invalid(
            &path,
            format!("the {split} split has no images"),
        ));
    }
    // A cache that cannot be written costs time, not correctness.
    if let Err(e) = cache::store(&info.cache_file, &ds) {
        tracing::warn!(error = %e, "could not write the dataset cache");
    }
    Ok((ds, info))
}
