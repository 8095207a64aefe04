//! Data on the training device: the decoded set as one uint8 tensor there,
//! and each batch augmented there by batched tensor ops, so a GPU never waits
//! for loader threads.
//!
//! The split of work: the per-image random choices (a few dozen numbers per
//! image: crop box, flip, erasing box; per batch: mixup/cutmix) are drawn on
//! the host by the CPU loader's own code ([`super::Augment::draw`],
//! [`super::mixup::sample_mix`]) from the same per-image generators, which
//! costs microseconds a batch and keeps one implementation of torchvision's
//! and timm's sampling. Everything per pixel (gather, bilinear resampling,
//! flip, normalisation, erasing noise, mixing) runs on the device. For one
//! seed the device path therefore reproduces the CPU loader's batches, up to
//! float rounding and the erasing noise, which the device draws itself.

mod batches;
mod erase;
mod mix;
mod pixels;
mod set;

pub use batches::DeviceBatches;
pub use erase::{erase, standard_normal};
pub use mix::apply_mix;
pub use pixels::crop_flip_normalise;
pub use set::{DeviceSet, Normalise};
