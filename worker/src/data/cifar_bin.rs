//! The official CIFAR-10 binary release (`cifar-10-batches-bin`): records of
//! 1 label byte followed by 3072 pixel bytes, channel-major (1024 red, 1024
//! green, 1024 blue, each row-major 32x32). See
//! <https://www.cs.toronto.edu/~kriz/cifar.html>.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Split};
use super::error::DataError;

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Bytes of one record: the label and the channel-major pixels.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;
/// The class names of CIFAR-10, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The files that make up a split of the binary release, in reading order.
pub fn split_files(dir: &Path, split: Split) -> Vec<PathBuf> {
    match split {
        Split::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
    }
}

/// The optional class-name file of the release.
pub fn meta_file(dir: &Path) -> PathBuf {
    dir.join("batches.meta.txt")
}

/// Whether `dir` looks like the binary release.
pub fn is_cifar_bin_dir(dir: &Path) -> bool {
    dir.join("data_batch_1.bin").is_file() || dir.join("test_batch.bin").is_file()
}

/// Read one split of the binary release in `dir`. Every file of the split must
/// be present (a partial download should fail, not train on less data).
pub fn read_split(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let classes = read_classes(dir)?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in split_files(dir, split) {
        if !file.is_file() {
            return Err(DataError::NotFound { path: file });
        }
        let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
        decode_records(&file, &bytes, classes.len(), &mut images, &mut labels)?;
    }
    Ok(Dataset {
        images,
        labels,
        height: SIDE,
        width: SIDE,
        classes,
    })
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored),
/// or CIFAR-10's when the file is absent.
pub(crate) fn read_classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let meta = meta_file(dir);
    if !meta.is_file() {
        return Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&meta).map_err(|e| DataError::io(&meta, e))?;
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if classes.is_empty() || classes.len() > 256 {
        return Err(DataError::invalid(
            &meta,
            format!("expected 1 to 256 class names, found {}", classes.len()),
        ));
    }
    Ok(classes)
}

/// Append the records of one batch file, turning channel-major pixels into HWC.
pub fn decode_records(
    file: &Path,
    bytes: &[u8],
    num_classes: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::invalid(
            file,
            format!(
                "truncated or not a CIFAR batch: {} bytes is not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        ));
    }
    let plane = SIDE * SIDE;
    for (r, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if usize::from(label) >= num_classes {
            return Err(DataError::invalid(
                file,
                format!("record {r} has label {label}, but there are {num_classes} classes"),
            ));
        }
        labels.push(label);
        let pixels = &record[1..];
        images.reserve(3 * plane);
        for p in 0..plane {
            images.extend_from_slice(&[pixels[p], pixels[plane + p], pixels[2 * plane + p]]);
        }
    }
    Ok(())
}
