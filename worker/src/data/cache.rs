//! The decoded-dataset cache: one file per (content hash, split) holding the
//! raw RGB bytes, so a second open is a single sequential read instead of
//! decoding tens of thousands of JPEGs.
//!
//! Layout (little endian): magic `MAELABDS`, version u32, height u32, width
//! u32, count u64, class count u32, each class as u32 length + UTF-8, then the
//! labels (count bytes) and the images (count * height * width * 3 bytes).
//! Files are written under a temporary name and renamed, so a crash never
//! leaves a half-written cache behind a valid name.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Split};
use super::error::DataError;

const MAGIC: &[u8; 8] = b"MAELABDS";
/// Bump when the layout or the decoding changes: old files are then ignored.
const VERSION: u32 = 1;

/// The cache file for a content key and split.
pub fn cache_path(cache_dir: &Path, key: &str, split: Split) -> PathBuf {
    cache_dir.join(format!("{key}-{split}.v{VERSION}.bin"))
}

/// Load a cache file; `Ok(None)` when it is absent or unusable (a warning is
/// logged and the caller decodes again).
pub fn load(path: &Path) -> Result<Option<Dataset>, DataError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(path, e)),
    };
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    match read_body(BufReader::new(file), len) {
        Ok(ds) => Ok(Some(ds)),
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "ignoring unusable dataset cache file");
            Ok(None)
        }
    }
}

fn read_body(mut r: impl Read, file_len: u64) -> Result<Dataset, String> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != MAGIC {
        return Err("not a maelab dataset cache".into());
    }
    let version = read_u32(&mut r)?;
    if version != VERSION {
        return Err(format!("cache version {version}, expected {VERSION}"));
    }
    let height = read_u32(&mut r)? as usize;
    let width = read_u32(&mut r)? as usize;
    let count = read_u64(&mut r)?;
    let n_classes = read_u32(&mut r)?;
    if n_classes > 256 {
        return Err(format!("{n_classes} classes"));
    }
    let mut header_len = 8 + 4 * 4 + 8;
    let mut classes = Vec::with_capacity(n_classes as usize);
    for _ in 0..n_classes {
        let len = read_u32(&mut r)? as usize;
        if len > 4096 {
            return Err("class name too long".into());
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        classes.push(String::from_utf8(buf).map_err(|e| e.to_string())?);
        header_len += 4 + len;
    }
    let per_image = (height as u64) * (width as u64) * 3;
    let expected = count
        .checked_mul(1 + per_image)
        .and_then(|body| body.checked_add(header_len as u64));
    if expected != Some(file_len) {
        let expected = expected.map_or("an impossible size".to_string(), |e| e.to_string());
        return Err(format!(
            "file is {file_len} bytes, header says {expected} (truncated?)"
        ));
    }
    let mut labels = vec![0u8; count as usize];
    r.read_exact(&mut labels).map_err(|e| e.to_string())?;
    let mut images = vec![0u8; (count * per_image) as usize];
    r.read_exact(&mut images).map_err(|e| e.to_string())?;
    if labels.iter().any(|&l| usize::from(l) >= classes.len()) {
        return Err("label out of range".into());
    }
    Ok(Dataset {
        images,
        labels,
        height,
        width,
        classes,
    })
}

/// Write `ds` to `path` atomically (temporary file, then rename).
pub fn store(path: &Path, ds: &Dataset) -> Result<(), DataError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(ds.height as u32).to_le_bytes())?;
        w.write_all(&(ds.width as u32).to_le_bytes())?;
        w.write_all(&(ds.len() as u64).to_le_bytes())?;
        w.write_all(&(ds.classes.len() as u32).to_le_bytes())?;
        for c in &ds.classes {
            w.write_all(&(c.len() as u32).to_le_bytes())?;
            w.write_all(c.as_bytes())?;
        }
        w.write_all(&ds.labels)?;
        w.write_all(&ds.images)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

fn read_u32(r: &mut impl Read) -> Result<u32, String> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> Result<u64, String> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u64::from_le_bytes(b))
}
