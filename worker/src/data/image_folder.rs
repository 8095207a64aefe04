//! ImageFolder trees on disk: `train/<class>/*.jpg|png` and `test/<class>/...`,
//! class names sorted to give labels (torchvision's convention).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::dataset::Split;
use super::decode::{Encoded, is_image_name};
use super::error::DataError;

/// Whether `dir` has a `train/` or `test/` folder.
pub fn is_image_folder(dir: &Path) -> bool {
    dir.join("train").is_dir() || dir.join("test").is_dir()
}

/// Sorted class names: the union of the class folders of both splits, so that
/// a label means the same class in `train` and `test` even when one split
/// lacks a class.
pub fn classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = BTreeSet::new();
    for split in [Split::Train, Split::Test] {
        let split_dir = dir.join(split.as_str());
        if !split_dir.is_dir() {
            continue;
        }
        for entry in read_dir_sorted(&split_dir)? {
            if entry.is_dir()
                && let Some(name) = entry.file_name().and_then(|n| n.to_str())
                && !name.starts_with('.')
            {
                names.insert(name.to_string());
            }
        }
    }
    if names.len() > 256 {
        return Err(DataError::invalid(
            dir,
            format!("{} class folders; at most 256 are supported", names.len()),
        ));
    }
    Ok(names.into_iter().collect())
}

/// Read the encoded images of one split, sorted by class then path, calling
/// `on_file` with each relative path and its bytes (the content hash).
pub fn read_split(
    dir: &Path,
    split: Split,
    classes: &[String],
    mut on_file: impl FnMut(&str, &[u8]),
) -> Result<Vec<Encoded>, DataError> {
    let split_dir = dir.join(split.as_str());
    if !split_dir.is_dir() {
        return Err(DataError::NotFound { path: split_dir });
    }
    let mut items = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = split_dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        walk_images(&class_dir, &mut files)?;
        if files.is_empty() {
            return Err(DataError::invalid(
                &class_dir,
                "class folder has no .jpg/.jpeg/.png images",
            ));
        }
        files.sort();
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            on_file(&rel.to_string_lossy(), &bytes);
            items.push(Encoded {
                path,
                bytes,
                // classes() caps the count at 256.
                label: label as u8,
            });
        }
    }
    if items.is_empty() {
        return Err(DataError::invalid(
            &split_dir,
            "no images: expected <class>/*.jpg|png folders",
        ));
    }
    Ok(items)
}

/// Image files under `dir`, recursively (ImageFolder allows nesting).
fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            walk_images(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_image_name)
        {
            out.push(path);
        }
    }
    Ok(())
}

pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}
