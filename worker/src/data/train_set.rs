//! Where a run's training images live, and the one kind of batch iterator the
//! trainer takes from either place: the decoded set on the training device
//! with batches augmented there ([`super::device`]), or in host memory with
//! batches built by the CPU [`Loader`]'s threads.

use std::rc::Rc;
use std::sync::Arc;

use tch::Device;

use super::dataset::Dataset;
use super::device::{DeviceBatches, DeviceSet};
use super::error::DataError;
use super::loader::{Batch, Loader, LoaderConfig};

/// Under [`DataOnDevice::Auto`], decoded sets up to this many bytes go to the
/// device: CIFAR-10's 150 MB does, with room for sets ten times its size,
/// while a GPU keeps most of its memory for the model.
pub const DEVICE_DATA_BUDGET: usize = 2 << 30;

/// Whether to put the decoded training set on the training device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataOnDevice {
    /// When it fits [`DEVICE_DATA_BUDGET`] (and the upload succeeds).
    #[default]
    Auto,
    /// Always (an upload failure is an error).
    On,
    /// Never: the CPU loader's threads build every batch.
    Off,
}

impl std::str::FromStr for DataOnDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("expected auto, on or off, got `{other}`")),
        }
    }
}

impl DataOnDevice {
    /// Whether a decoded set of `bytes` goes to the device.
    pub fn wants(self, bytes: usize) -> bool {
        match self {
            Self::Auto => bytes <= DEVICE_DATA_BUDGET,
            Self::On => true,
            Self::Off => false,
        }
    }
}

/// A run's training images, placed.
pub enum TrainSet {
    Host(Arc<Dataset>),
    /// Shared by the epochs' batch iterators on the training thread.
    Device(Rc<DeviceSet>),
}

impl TrainSet {
    /// Place `ds` as `choice` says. Under `Auto` a failed upload (a GPU
    /// without the room) falls back to the host with a warning.
    pub fn place(ds: Dataset, choice: DataOnDevice, device: Device) -> Result<Self, DataError> {
        if !choice.wants(ds.images.len()) {
            return Ok(Self::Host(Arc::new(ds)));
        }
        match DeviceSet::upload(&ds, device) {
            Ok(set) => Ok(Self::Device(Rc::new(set))),
            Err(e) if choice == DataOnDevice::Auto => {
                tracing::warn!(error = %e, "training data stays on the host");
                Ok(Self::Host(Arc::new(ds)))
            }
            Err(e) => Err(e),
        }
    }

    pub fn is_on_device(&self) -> bool {
        matches!(self, Self::Device(_))
    }

    /// One epoch's batches as `cfg` describes them.
    pub fn batches(&self, cfg: LoaderConfig) -> Result<Batches, DataError> {
        match self {
            Self::Host(ds) => Loader::try_new(ds.clone(), cfg).map(Batches::Host),
            Self::Device(set) => DeviceBatches::try_new(set.clone(), cfg).map(Batches::Device),
        }
    }
}

/// One epoch's batches from either place.
pub enum Batches {
    Host(Loader),
    Device(DeviceBatches),
}

impl Batches {
    pub fn num_batches(&self) -> usize {
        match self {
            Self::Host(l) => l.num_batches(),
            Self::Device(d) => d.num_batches(),
        }
    }

    /// Dataset indices in this epoch's order (batch after batch).
    pub fn order(&self) -> &[usize] {
        match self {
            Self::Host(l) => l.order(),
            Self::Device(d) => d.order(),
        }
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self {
            Self::Host(l) => l.next(),
            Self::Device(d) => d.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Self::Host(l) => l.size_hint(),
            Self::Device(d) => d.size_hint(),
        }
    }
}

impl ExactSizeIterator for Batches {}
