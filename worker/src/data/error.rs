//! The one error type of the data pipeline. Every variant names the file (or
//! URL) at fault, so a bad dataset is reported in one line a person can act on.

use std::path::PathBuf;

/// Why a dataset could not be opened, cached, downloaded or unpacked.
///
/// Messages carry their cause inline (not as a `source`) so that `{err:#}`
/// prints it once.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset path does not exist.
    #[error("{path}: no such file or folder")]
    NotFound { path: PathBuf },
    /// The file or folder exists but is not a dataset we can read.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Reading or writing failed at the operating-system level.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// An image file is not a valid JPEG/PNG.
    #[error("{path}: cannot decode image: {cause}")]
    Decode {
        path: PathBuf,
        cause: image::ImageError,
    },
    /// A downloaded file does not have the published checksum.
    #[error("{path}: md5 is {actual}, expected {expected} (corrupt or incomplete download)")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The decoded images could not be put on the training device (out of
    /// memory, or a device libtorch cannot use).
    #[error("putting the dataset on {device}: {reason}")]
    Device { device: String, reason: String },
    /// The network request failed.
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
