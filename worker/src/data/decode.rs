//! Decoding JPEG/PNG bytes into a [`Dataset`], on all CPU cores.

use std::path::PathBuf;

use super::dataset::Dataset;
use super::error::DataError;

/// One encoded image read from a folder or an archive.
pub struct Encoded {
    /// Where it came from, for error messages (`archive.tar.gz/train/cat/1.jpg`).
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub label: u8,
}

/// Whether a file name is an image we decode (`.jpg`, `.jpeg`, `.png`, any
/// case); hidden files such as macOS `._x.jpg` resource forks are skipped.
pub fn is_image_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// Decode every item into RGB HWC bytes. All images must have the size of
/// the first one; a file that does not decode or differs in size is an error
/// naming it.
pub fn decode_all(items: &[Encoded], classes: Vec<String>) -> Result<Dataset, DataError> {
    let Some(first) = items.first() else {
        return Ok(Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            height: 0,
            width: 0,
            classes,
        });
    };
    let probe = decode_one(first)?;
    let (width, height) = probe.dimensions();
    let per_image = width as usize * height as usize * 3;
    let mut images = vec![0u8; items.len() * per_image];

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    let per_thread = items.len().div_ceil(threads);
    let results: Vec<Result<(), DataError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .zip(images.chunks_mut(per_thread * per_image))
            .map(|(chunk, out)| {
                scope.spawn(move || {
                    for (item, dst) in chunk.iter().zip(out.chunks_exact_mut(per_image)) {
                        let img = decode_one(item)?;
                        if img.dimensions() != (width, height) {
                            let (w, h) = img.dimensions();
                            return Err(DataError::invalid(
                                &item.path,
                                format!(
                                    "image is {w}x{h}, but the first image ({}) is {width}x{height}; all images must have one size",
                                    first.path.display()
                                ),
                            ));
                        }
                        dst.copy_from_slice(img.as_raw());
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataError::invalid(
                        &first.path,
                        "an image decoding thread panicked",
                    ))
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(Dataset {
        images,
        labels: items.iter().map(|i| i.label).collect(),
        height: height as usize,
        width: width as usize,
        classes,
    })
}

fn decode_one(item: &Encoded) -> Result<image::RgbImage, DataError> {
    image::load_from_memory(&item.bytes)
        .map(|img| img.to_rgb8())
        .map_err(|cause| DataError::Decode {
            path: item.path.clone(),
            cause,
        })
}
