//! The decoded set on the training device: uint8 `[N, 3, H, W]` images and
//! i64 labels, uploaded once.
//!
//! NCHW rather than the decoded HWC: the resampling (`grid_sampler_2d`) and
//! the model take NCHW, and a batch gather then copies whole images; the
//! transpose happens once, at upload.

use tch::{Device, Kind, TchError, Tensor};

use super::super::dataset::Dataset;
use super::super::error::DataError;
use super::super::{CIFAR10_MEAN, CIFAR10_STD};

/// Normalisation as `pixel * scale - shift` per channel, with pixels in
/// 0..=255: `(pixel / 255 - mean) / std`, the CPU loader's arithmetic.
#[derive(Debug)]
pub struct Normalise {
    /// `[1, 3, 1, 1]` f32: `1 / (255 * std)`.
    pub scale: Tensor,
    /// `[1, 3, 1, 1]` f32: `mean / std`.
    pub shift: Tensor,
}

impl Normalise {
    /// CIFAR-10's mean and std, on `device`.
    pub fn cifar10(device: Device) -> Result<Self, TchError> {
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * CIFAR10_STD[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| CIFAR10_MEAN[c] / CIFAR10_STD[c]);
        let put = |v: &[f32]| {
            Tensor::f_from_slice(v)?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)
        };
        Ok(Self {
            scale: put(&scale)?,
            shift: put(&shift)?,
        })
    }
}

/// A decoded set on its device.
#[derive(Debug)]
pub struct DeviceSet {
    /// `[N, 3, H, W]` u8.
    pub images: Tensor,
    /// `[N]` i64.
    pub labels: Tensor,
    /// The labels again on the host, where mixed soft targets are built.
    pub host_labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    /// Number of class names of the dataset.
    pub classes: usize,
    pub normalise: Normalise,
}

impl DeviceSet {
    /// Copy `ds` to `device` (the host images can be dropped afterwards).
    pub fn upload(ds: &Dataset, device: Device) -> Result<Self, DataError> {
        let failed = |e: TchError| DataError::Device {
            device: format!("{device:?}").to_lowercase(),
            reason: e.to_string(),
        };
        let (n, h, w) = (ds.len() as i64, ds.height as i64, ds.width as i64);
        let images = Tensor::f_from_slice(&ds.images)
            .and_then(|t| t.f_view([n, h, w, 3]))
            .and_then(|t| t.f_to_device(device))
            .and_then(|t| t.f_permute([0, 3, 1, 2]))
            .and_then(|t| t.f_contiguous())
            .map_err(failed)?;
        let labels = Tensor::f_from_slice(&ds.labels)
            .and_then(|t| t.f_to_kind(Kind::Int64))
            .and_then(|t| t.f_to_device(device))
            .map_err(failed)?;
        Ok(Self {
            images,
            labels,
            host_labels: ds.labels.clone(),
            height: ds.height,
            width: ds.width,
            classes: ds.classes.len(),
            normalise: Normalise::cifar10(device).map_err(failed)?,
        })
    }

    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }

    pub fn device(&self) -> Device {
        self.images.device()
    }
}
