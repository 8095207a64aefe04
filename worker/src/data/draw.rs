//! The random choices for one training image (crop, flip, erasing box),
//! drawn in one place for both paths: the CPU loader applies them per image
//! on its threads, the device path applies a batch of them at once. Both draw
//! from the same per-image generator ([`super::rng::derive`] of seed, epoch
//! and position), so for one seed the two paths crop, flip and erase alike.

use rand::Rng;

use super::augment::{CROP_RATIO, Crop, erase_box, random_resized_crop};
use super::loader::Augment;

/// What happens to one image, before any pixel is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// The region resampled to the full image.
    pub crop: Crop,
    /// Mirror left to right.
    pub flip: bool,
    /// The rectangle filled with noise after normalisation (finetuning).
    pub erase: Option<Crop>,
}

impl Augment {
    /// Draw one image's choices, in the order the CPU loader always drew
    /// them: crop, flip, then the erasing box (its noise comes after).
    pub fn draw(&self, rng: &mut impl Rng, height: usize, width: usize) -> Draw {
        let full = Draw {
            crop: Crop::full(height, width),
            flip: false,
            erase: None,
        };
        match self {
            Self::None => full,
            Self::Pretrain { scale } => {
                let crop = random_resized_crop(rng, height, width, *scale, CROP_RATIO);
                let flip = rng.r#gen::<f64>() < 0.5;
                Draw { crop, flip, ..full }
            }
            Self::Finetune(f) => {
                let crop = random_resized_crop(rng, height, width, f.scale, CROP_RATIO);
                let flip = f.hflip && rng.r#gen::<f64>() < 0.5;
                let erase = erase_box(rng, height, width, f.reprob);
                Draw { crop, flip, erase }
            }
        }
    }
}
