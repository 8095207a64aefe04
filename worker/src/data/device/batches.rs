//! One epoch of batches built on the device, on the caller's thread: the
//! same epoch order and per-image draws as the CPU [`crate::data::Loader`],
//! the pixels done by batched tensor ops.

use std::rc::Rc;

use rand::Rng;
use tch::{Device, Tensor};

use super::set::DeviceSet;
use super::{apply_mix, crop_flip_normalise, erase};
use crate::data::error::DataError;
use crate::data::loader::{Batch, LoaderConfig};
use crate::data::mixup::{mixed_targets, sample_mix};
use crate::data::rng::{Stream, derive};

/// Columns of a batch's draws tensor: crop (top, left, height, width),
/// flip, erase, erasing box (top, left, height, width).
const DRAW_COLUMNS: usize = 10;

/// Iterator over one epoch's batches, built on the set's device.
pub struct DeviceBatches {
    set: Rc<DeviceSet>,
    cfg: LoaderConfig,
    /// Dataset indices in epoch order (batch after batch).
    order: Vec<usize>,
    /// The same, on the device, so a batch's gather needs no upload.
    order_on_device: Tensor,
    num_batches: usize,
    next: usize,
}

impl DeviceBatches {
    /// Plan one epoch, or say why the config does not fit the set (as
    /// [`crate::data::Loader::try_new`]; `threads` and `prefetch` are unused).
    pub fn try_new(set: Rc<DeviceSet>, cfg: LoaderConfig) -> Result<Self, DataError> {
        cfg.check(set.classes)?;
        let (order, num_batches) = cfg.epoch_order(set.len());
        let indices: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        let device = set.device();
        let order_on_device = Tensor::f_from_slice(&indices)
            .and_then(|t| t.f_to_device(device))
            .map_err(|e| DataError::Device {
                device: format!("{device:?}").to_lowercase(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            set,
            cfg,
            order,
            order_on_device,
            num_batches,
            next: 0,
        })
    }

    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// Dataset indices in this epoch's order (batch after batch).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    fn build(&self, b: usize) -> Batch {
        let (cfg, set) = (&self.cfg, &*self.set);
        let start = b * cfg.batch_size;
        let n = cfg.batch_size.min(self.order.len() - start);
        let (h, w) = (set.height, set.width);
        let mut draws = Vec::with_capacity(n * DRAW_COLUMNS);
        // Batch positions of the erased images: only they get noise.
        let mut erased: Vec<i64> = Vec::new();
        for k in 0..n {
            let mut rng = derive(cfg.seed, cfg.epoch, (start + k) as u64, Stream::Sample);
            let d = cfg.augment.draw(&mut rng, h, w);
            let e = d.erase.unwrap_or(d.crop);
            if d.erase.is_some() {
                erased.push(k as i64);
            }
            draws.extend(
                [
                    d.crop.top,
                    d.crop.left,
                    d.crop.height,
                    d.crop.width,
                    usize::from(d.flip),
                    usize::from(d.erase.is_some()),
                    e.top,
                    e.left,
                    e.height,
                    e.width,
                ]
                .map(|v| v as f32),
            );
        }
        let device = set.device();
        let draws = Tensor::from_slice(&draws)
            .view([n as i64, DRAW_COLUMNS as i64])
            .to_device(device);
        let positions = self.order_on_device.narrow(0, start as i64, n as i64);
        let mut images = crop_flip_normalise(
            &set.images.index_select(0, &positions),
            &draws.narrow(1, 0, 4),
            &draws.select(1, 4).gt(0.5),
            &set.normalise,
        );
        if !erased.is_empty() {
            let key = derive(cfg.seed, cfg.epoch, b as u64, Stream::Noise).r#gen::<u32>();
            let at = Tensor::from_slice(&erased).to_device(device);
            let noisy = erase(
                &images.index_select(0, &at),
                &draws.index_select(0, &at).narrow(1, 6, 4),
                &draws.index_select(0, &at).select(1, 5).gt(0.5),
                key,
            );
            images = images.index_copy(0, &at, &noisy);
        }
        let mut targets = None;
        if let Some((mix_cfg, f)) = cfg.soft_targets() {
            let mut rng = derive(cfg.seed, cfg.epoch, b as u64, Stream::Mix);
            let mix = sample_mix(&mut rng, &mix_cfg, n, h, w);
            images = apply_mix(&images, &mix);
            let labels: Vec<i64> = self.order[start..start + n]
                .iter()
                .map(|&i| i64::from(set.host_labels[i]))
                .collect();
            let soft = mixed_targets(&labels, mix.lam, f.smoothing, f.num_classes);
            targets = Some(
                Tensor::from_slice(&soft)
                    .view([n as i64, f.num_classes as i64])
                    .to_device(device),
            );
        }
        Batch {
            images,
            labels: set.labels.index_select(0, &positions),
            targets,
        }
    }
}

impl Iterator for DeviceBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.num_batches {
            return None;
        }
        let batch = if self.set.device() == Device::Cpu {
            one_thread(|| self.build(self.next))
        } else {
            self.build(self.next)
        };
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for DeviceBatches {}

/// Run `f` with torch on one CPU thread. A batch is about a millisecond of
/// work in thirty-odd ops; split over threads, each op ends in a barrier
/// that waits for the slowest thread, which on a busy machine costs more
/// than the split gains (measured: 27,000 images/s on 2 threads at load 4.7
/// against 117,000 on 1, docs/benchmarks.md).
fn one_thread<T>(f: impl FnOnce() -> T) -> T {
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    let out = f();
    tch::set_num_threads(threads);
    out
}
