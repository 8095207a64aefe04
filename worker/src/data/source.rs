//! What a dataset spec points at, and how to read it into memory, hash it and
//! decode it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dataset::{Dataset, Split};
use super::decode::{Encoded, decode_all};
use super::error::DataError;
use super::{archive, cifar_bin, image_folder};

/// The environment variable that locates the worker's CIFAR-10 copy.
pub const CIFAR10_ENV: &str = "MAELAB_CIFAR10";
/// Where `cifar10` points when the variable is unset (from the project root).
pub const CIFAR10_DEFAULT: &str = "../shared/data/cifar10-jpeg.tar.gz";

/// The path a spec names: `cifar10` means `$MAELAB_CIFAR10` (or its default).
pub fn resolve_spec(spec: &str) -> PathBuf {
    if spec == maelab_core::config::DEFAULT_DATASET {
        std::env::var_os(CIFAR10_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(CIFAR10_DEFAULT), PathBuf::from)
    } else {
        PathBuf::from(spec)
    }
}

/// The kind of dataset at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A folder with the official binary files.
    CifarBin(PathBuf),
    /// A folder with `train/<class>/` and `test/<class>/`.
    ImageFolder(PathBuf),
    /// A `.tar.gz` / `.tgz` of an ImageFolder tree.
    Archive(PathBuf),
}

impl Source {
    /// Work out what `path` holds. A folder whose only entry is a dataset
    /// folder (as the official archive unpacks, `cifar-10-batches-bin/`) is
    /// looked through.
    pub fn detect(path: &Path) -> Result<Self, DataError> {
        if !path.exists() {
            return Err(DataError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if path.is_file() {
            if archive::is_archive_name(path) {
                return Ok(Self::Archive(path.to_path_buf()));
            }
            return Err(DataError::invalid(
                path,
                "not a dataset: expected a folder or a .tar.gz/.tgz archive",
            ));
        }
        if let Some(source) = Self::detect_dir(path) {
            return Ok(source);
        }
        let entries = image_folder::read_dir_sorted(path)?;
        if let [only] = entries.as_slice()
            && only.is_dir()
            && let Some(source) = Self::detect_dir(only)
        {
            return Ok(source);
        }
        let reason = if entries.is_empty() {
            "empty folder: expected data_batch_1..5.bin and test_batch.bin, or train/<class>/ and test/<class>/ folders"
        } else {
            "not a dataset folder: expected data_batch_1..5.bin and test_batch.bin, or train/<class>/ and test/<class>/ folders"
        };
        Err(DataError::invalid(path, reason))
    }

    fn detect_dir(dir: &Path) -> Option<Self> {
        if cifar_bin::is_cifar_bin_dir(dir) {
            Some(Self::CifarBin(dir.to_path_buf()))
        } else if image_folder::is_image_folder(dir) {
            Some(Self::ImageFolder(dir.to_path_buf()))
        } else {
            None
        }
    }

    /// Read the bytes a split depends on and hash them. Nothing is decoded yet.
    pub fn read(&self, split: Split) -> Result<Raw, DataError> {
        match self {
            Self::Archive(path) => {
                let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
                // The plain sha256 of the archive, so the cache file names
                // match the checksum a person sees in the data's README.
                let key = hex::encode(Sha256::digest(&bytes));
                Ok(Raw {
                    key,
                    body: RawBody::Archive {
                        path: path.clone(),
                        bytes,
                        split,
                    },
                })
            }
            Self::CifarBin(dir) => {
                let mut h = Sha256::new();
                h.update(b"maelab cifar-bin\0");
                let mut files = Vec::new();
                let mut names = cifar_bin::split_files(dir, split);
                let meta = cifar_bin::meta_file(dir);
                if meta.is_file() {
                    names.push(meta);
                }
                for file in names {
                    if !file.is_file() {
                        return Err(DataError::NotFound { path: file });
                    }
                    let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
                    hash_named(
                        &mut h,
                        &file.file_name().unwrap_or_default().to_string_lossy(),
                        &bytes,
                    );
                    files.push((file, bytes));
                }
                Ok(Raw {
                    key: hex::encode(h.finalize()),
                    body: RawBody::CifarBin {
                        dir: dir.clone(),
                        files,
                    },
                })
            }
            Self::ImageFolder(dir) => {
                let classes = image_folder::classes(dir)?;
                let mut h = Sha256::new();
                h.update(b"maelab image-folder\0");
                for c in &classes {
                    h.update(c.as_bytes());
                    h.update(b"\0");
                }
                let items = image_folder::read_split(dir, split, &classes, |rel, bytes| {
                    hash_named(&mut h, rel, bytes)
                })?;
                Ok(Raw {
                    key: hex::encode(h.finalize()),
                    body: RawBody::Encoded { items, classes },
                })
            }
        }
    }
}

/// Hash a name and its contents unambiguously (lengths first).
fn hash_named(h: &mut Sha256, name: &str, bytes: &[u8]) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// A split's source bytes in memory, with their content hash.
pub struct Raw {
    /// Hex sha256 of the content; names the cache file.
    pub key: String,
    body: RawBody,
}

enum RawBody {
    Archive {
        path: PathBuf,
        bytes: Vec<u8>,
        split: Split,
    },
    CifarBin {
        dir: PathBuf,
        files: Vec<(PathBuf, Vec<u8>)>,
    },
    Encoded {
        items: Vec<Encoded>,
        classes: Vec<String>,
    },
}

impl Raw {
    /// Decode into images and labels.
    pub fn decode(self) -> Result<Dataset, DataError> {
        match self.body {
            RawBody::Archive { path, bytes, split } => {
                let found = archive::read_split(&path, &bytes, split)?;
                drop(bytes);
                decode_all(&found.items, found.classes)
            }
            RawBody::CifarBin { dir, files } => {
                let classes = cifar_bin::read_classes(&dir)?;
                let mut images = Vec::new();
                let mut labels = Vec::new();
                for (file, bytes) in files
                    .iter()
                    .filter(|(f, _)| *f != cifar_bin::meta_file(&dir))
                {
                    cifar_bin::decode_records(
                        file,
                        bytes,
                        classes.len(),
                        &mut images,
                        &mut labels,
                    )?;
                }
                Ok(Dataset {
                    images,
                    labels,
                    height: cifar_bin::SIDE,
                    width: cifar_bin::SIDE,
                    classes,
                })
            }
            RawBody::Encoded { items, classes } => decode_all(&items, classes),
        }
    }
}
