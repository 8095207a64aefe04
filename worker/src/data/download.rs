//! Fetching the official CIFAR-10 binary release for real users, split so the
//! part that needs no network (checksum, unpacking) is testable offline.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use super::error::DataError;

/// The official binary release.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its published md5.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The files kept from the archive.
const WANTED: [&str; 7] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
    "batches.meta.txt",
];

/// Download `url` to the file `to` (through a temporary name, so an
/// interrupted download leaves nothing that looks complete).
pub fn download(url: &str, to: &Path) -> Result<(), DataError> {
    let fail = |reason: String| {
        // ureq prefixes its messages with the URL, which the error already names.
        let reason = reason.strip_prefix(&format!("{url}: ")).unwrap_or(&reason);
        DataError::Download {
            url: url.to_string(),
            // One line: transport errors can carry nested causes on new lines.
            reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    let tmp = to.with_extension("part");
    let copy = || -> std::io::Result<()> {
        let mut out = File::create(&tmp)?;
        std::io::copy(&mut response.into_reader(), &mut out)?;
        out.flush()?;
        std::fs::rename(&tmp, to)
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e.to_string())
    })
}

/// Hex md5 of a file.
pub fn md5_file(path: &Path) -> Result<String, DataError> {
    let mut file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Check the archive's md5, then unpack the batch files (and the class names)
/// flat into `dest`. Returns the files written. Only the known file names are
/// taken, by their last path component, so no entry can write outside `dest`.
pub fn verify_and_unpack(
    archive: &Path,
    expected_md5: &str,
    dest: &Path,
) -> Result<Vec<PathBuf>, DataError> {
    let actual = md5_file(archive)?;
    if !actual.eq_ignore_ascii_case(expected_md5) {
        return Err(DataError::Checksum {
            path: archive.to_path_buf(),
            expected: expected_md5.to_ascii_lowercase(),
            actual,
        });
    }
    std::fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let corrupt = |e: std::io::Error| DataError::invalid(archive, format!("corrupt archive: {e}"));
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut written = Vec::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(corrupt)?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !WANTED.contains(&name) {
            continue;
        }
        let target = dest.join(name);
        let tmp = target.with_extension("part");
        let mut out = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
        std::fs::rename(&tmp, &target).map_err(|e| DataError::io(&target, e))?;
        written.push(target);
    }
    let missing: Vec<&str> = WANTED[..6]
        .iter()
        .copied()
        .filter(|w| !written.iter().any(|p| p.ends_with(w)))
        .collect();
    if !missing.is_empty() {
        return Err(DataError::invalid(
            archive,
            format!("archive lacks {}", missing.join(", ")),
        ));
    }
    written.sort();
    Ok(written)
}

/// Download the official CIFAR-10 binary release into `dest`, verify it and
/// unpack it. The archive is kept beside `dest` so a retry skips the network.
pub fn download_cifar10(dest: &Path) -> Result<Vec<PathBuf>, DataError> {
    let archive = dest.with_file_name("cifar-10-binary.tar.gz");
    if archive.is_file() && md5_file(&archive)? == CIFAR10_MD5 {
        tracing::info!(path = %archive.display(), "reusing the downloaded archive");
    } else {
        tracing::info!(url = CIFAR10_URL, "downloading");
        download(CIFAR10_URL, &archive)?;
    }
    verify_and_unpack(&archive, CIFAR10_MD5, dest)
}
