//! `.tar.gz` / `.tgz` archives of an ImageFolder tree, read straight from
//! memory without unpacking to disk. The tree may sit at the archive's root
//! (`train/cat/1.jpg`) or inside one top-level folder (`cifar10/train/cat/1.jpg`).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use super::dataset::Split;
use super::decode::{Encoded, is_image_name};
use super::error::DataError;

/// Whether a file name says gzip-compressed tar.
pub fn is_archive_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// The images of one split and the class names of both splits (sorted, so a
/// label means the same class in train and test).
pub struct ArchiveSplit {
    pub items: Vec<Encoded>,
    pub classes: Vec<String>,
}

/// Read the images of `split` from the archive bytes; `archive` names the file
/// in errors.
pub fn read_split(archive: &Path, bytes: &[u8], split: Split) -> Result<ArchiveSplit, DataError> {
    let corrupt = |e: std::io::Error| DataError::invalid(archive, format!("corrupt archive: {e}"));
    let mut tar = tar::Archive::new(GzDecoder::new(bytes));
    // The top-level folder seen first (None: the tree is at the root);
    // every later image must agree, or the layout is ambiguous.
    let mut prefix: Option<Option<String>> = None;
    let mut classes = BTreeSet::new();
    // (class, path inside the archive, bytes)
    let mut found: Vec<(String, String, Vec<u8>)> = Vec::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(corrupt)?.into_owned();
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let Some(name) = parts.last() else { continue };
        if !is_image_name(name) {
            continue;
        }
        // <split>/<class>/.../<file>, optionally under one top folder.
        let (top, rel) = if parts.len() >= 3 && is_split_name(&parts[0]) {
            (None, &parts[..])
        } else if parts.len() >= 4 && is_split_name(&parts[1]) {
            (Some(parts[0].clone()), &parts[1..])
        } else {
            continue;
        };
        match &prefix {
            None => prefix = Some(top.clone()),
            Some(p) if *p != top => {
                return Err(DataError::invalid(
                    archive,
                    format!(
                        "images under more than one top-level folder ({} and {}); expected one tree",
                        p.as_deref().unwrap_or("/"),
                        top.as_deref().unwrap_or("/")
                    ),
                ));
            }
            Some(_) => {}
        }
        classes.insert(rel[1].clone());
        if rel[0] != split.as_str() {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(corrupt)?;
        found.push((rel[1].clone(), path.to_string_lossy().into_owned(), data));
    }
    if classes.len() > 256 {
        return Err(DataError::invalid(
            archive,
            format!("{} classes; at most 256 are supported", classes.len()),
        ));
    }
    if found.is_empty() {
        return Err(DataError::invalid(
            archive,
            format!(
                "no images under {split}/<class>/ (expected {split}/<class>/*.jpg|png, optionally inside one top-level folder)"
            ),
        ));
    }
    let classes: Vec<String> = classes.into_iter().collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let items = found
        .into_iter()
        .map(|(class, inner, bytes)| Encoded {
            path: archive.join(inner),
            bytes,
            // The class was inserted above and the count is capped at 256.
            label: classes.binary_search(&class).unwrap_or(0) as u8,
        })
        .collect();
    Ok(ArchiveSplit { items, classes })
}

fn is_split_name(s: &str) -> bool {
    s == "train" || s == "test"
}
