//! Decoded images in memory and the split they come from.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Which half of a dataset: the training images or the held-out test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The folder name of the split in an ImageFolder tree (`train`, `test`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decoded images in memory: u8 RGB, HWC, row-major, image after image.
///
/// Kept as raw bytes (150 MB for CIFAR-10's training split) rather than as a
/// tensor so that loader threads can augment any image without touching torch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Bytes of one image (height * width * 3).
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * 3
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as HWC RGB bytes. Panics when `i` is out of range, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A seeded, class-stratified subset of n images (for tiny runs and tests).
    ///
    /// Each class gets a share proportional to its size (largest remainder),
    /// so a balanced dataset gives a balanced subset; within a class the
    /// images are a seeded random choice. The subset keeps the original order.
    /// `n >= len()` gives the whole dataset.
    pub fn subset(&self, n: usize, seed: u64) -> Dataset {
        if n >= self.len() {
            return self.clone();
        }
        let counts = self.class_counts();
        let total = self.len();
        // Largest-remainder quotas: floor shares first, then the leftover
        // images go to the classes with the largest fractional parts.
        let mut quotas: Vec<usize> = counts.iter().map(|&c| c * n / total).collect();
        let mut rest: Vec<(usize, usize)> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| ((c * n) % total, i))
            .collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        // Capped by the labelled images so the loop below always ends.
        let mut missing = n.min(counts.iter().sum()) - quotas.iter().sum::<usize>();
        for &(_, class) in rest.iter().cycle() {
            if missing == 0 {
                break;
            }
            if quotas[class] < counts[class] {
                quotas[class] += 1;
                missing -= 1;
            }
        }

        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(v) = by_class.get_mut(l as usize) {
                v.push(i);
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut chosen: Vec<usize> = Vec::with_capacity(n);
        for (members, &quota) in by_class.iter_mut().zip(&quotas) {
            members.shuffle(&mut rng);
            chosen.extend_from_slice(&members[..quota]);
        }
        chosen.sort_unstable();
        self.select(&chosen)
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_bytes());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            height: self.height,
            width: self.width,
            classes: self.classes.clone(),
        }
    }
}
