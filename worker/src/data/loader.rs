//! The epoch loader: batches built on background threads (augmentation,
//! mixing, normalisation) while the caller trains, delivered in order.
//!
//! Workers take batch numbers from a shared counter and send finished batches
//! through a bounded channel (`prefetch` deep); the iterator puts them back in
//! order. Every random choice is derived from (seed, epoch, position), so the
//! batches are bit-identical whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use rand::seq::SliceRandom;
use tch::Tensor;

use super::augment::{self, FINETUNE_CROP_SCALE, PRETRAIN_CROP_SCALE};
use super::dataset::Dataset;
use super::error::DataError;
use super::mixup::{MixConfig, mix_batch, mixed_targets};
use super::rng::{Stream, derive};

/// What happens to each training image.
#[derive(Debug, Clone, PartialEq)]
pub enum Augment {
    /// Normalisation only (evaluation).
    None,
    /// MAE pretraining: RandomResizedCrop(scale) + horizontal flip.
    Pretrain { scale: (f64, f64) },
    /// MAE finetuning: crop, flip, random erasing, mixup/cutmix, smoothing.
    Finetune(FinetuneAugment),
}

impl Augment {
    /// Pretraining with MAE's crop scale.
    pub fn pretrain() -> Self {
        Self::Pretrain {
            scale: PRETRAIN_CROP_SCALE,
        }
    }

    /// The training augmentation of a run: its kind picks the recipe, its
    /// regularisation fields fill it in.
    pub fn for_run(cfg: &maelab_core::config::RunConfig) -> Self {
        match cfg.kind {
            maelab_core::config::RunKind::Pretrain => Self::pretrain(),
            maelab_core::config::RunKind::Finetune => Self::Finetune(FinetuneAugment {
                scale: FINETUNE_CROP_SCALE,
                hflip: true,
                mixup: cfg.mixup,
                cutmix: cfg.cutmix,
                mixup_prob: cfg.mixup_prob,
                mixup_switch_prob: cfg.mixup_switch_prob,
                smoothing: cfg.smoothing,
                reprob: cfg.reprob,
                num_classes: cfg.shape.num_classes as usize,
            }),
        }
    }
}

/// The finetune recipe (MAE main_finetune.py defaults: mixup 0.8, cutmix 1.0,
/// prob 1, switch 0.5, smoothing 0.1, reprob 0.25).
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneAugment {
    pub scale: (f64, f64),
    pub hflip: bool,
    pub mixup: f64,
    pub cutmix: f64,
    pub mixup_prob: f64,
    pub mixup_switch_prob: f64,
    pub smoothing: f64,
    pub reprob: f64,
    pub num_classes: usize,
}

impl FinetuneAugment {
    /// MAE's finetune recipe for `num_classes` classes at 32x32.
    pub fn recipe(num_classes: usize) -> Self {
        Self {
            scale: FINETUNE_CROP_SCALE,
            hflip: true,
            mixup: 0.8,
            cutmix: 1.0,
            mixup_prob: 1.0,
            mixup_switch_prob: 0.5,
            smoothing: 0.1,
            reprob: 0.25,
            num_classes,
        }
    }

    fn mix_config(&self) -> MixConfig {
        MixConfig {
            mixup: self.mixup,
            cutmix: self.cutmix,
            prob: self.mixup_prob,
            switch_prob: self.mixup_switch_prob,
            smoothing: self.smoothing,
            num_classes: self.num_classes,
        }
    }
}

/// How one epoch is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Drop the last, incomplete batch.
    pub drop_last: bool,
    pub seed: u64,
    pub epoch: u64,
    pub augment: Augment,
    /// Use only the first this many indices of the epoch's order: a fresh
    /// random sample each epoch (`epoch_images`); None: the whole dataset.
    pub limit: Option<usize>,
    /// Background threads building batches (0 counts as 1).
    pub threads: usize,
    /// Finished batches waiting for the caller (0 counts as 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Say why this config does not fit a dataset with `classes` classes
    /// (batch size 0, fewer classes than the labels need).
    pub(crate) fn check(&self, classes: usize) -> Result<(), DataError> {
        if self.batch_size == 0 {
            return Err(DataError::invalid(
                "loader",
                "batch_size must be at least 1",
            ));
        }
        if let Augment::Finetune(f) = &self.augment
            && f.num_classes < classes
        {
            return Err(DataError::invalid(
                "loader",
                format!(
                    "num_classes is {} but the dataset has {classes} classes",
                    f.num_classes
                ),
            ));
        }
        Ok(())
    }

    /// The epoch's dataset indices in order (shuffled by seed and epoch, cut
    /// to `limit`) and how many batches they make.
    pub(crate) fn epoch_order(&self, len: usize) -> (Vec<usize>, usize) {
        let mut order: Vec<usize> = (0..len).collect();
        if self.shuffle {
            order.shuffle(&mut derive(self.seed, self.epoch, 0, Stream::Shuffle));
        }
        if let Some(n) = self.limit {
            order.truncate(n);
        }
        let num_batches = if self.drop_last {
            order.len() / self.batch_size
        } else {
            order.len().div_ceil(self.batch_size)
        };
        (order, num_batches)
    }

    /// The mixing settings when batches carry soft targets.
    pub(crate) fn soft_targets(&self) -> Option<(MixConfig, &FinetuneAugment)> {
        match &self.augment {
            Augment::Finetune(f) if f.mix_config().soft_targets() => Some((f.mix_config(), f)),
            _ => None,
        }
    }
}

/// One batch, ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// `[B, 3, H, W]` f32, normalised with the CIFAR-10 mean/std; on the CPU
    /// from the [`Loader`], on the training device from the device path.
    pub images: Tensor,
    /// `[B]` i64 class indices (before mixing).
    pub labels: Tensor,
    /// `[B, num_classes]` f32 soft targets when mixup/cutmix/smoothing applies.
    pub targets: Option<Tensor>,
}

/// A batch as plain buffers, built off the caller's thread (no torch there).
struct RawBatch {
    images: Vec<f32>,
    labels: Vec<i64>,
    targets: Option<Vec<f32>>,
}

/// Everything a worker thread needs, shared read-only.
struct Plan {
    ds: Arc<Dataset>,
    cfg: LoaderConfig,
    /// Dataset indices in epoch order.
    order: Vec<usize>,
    num_batches: usize,
}

/// Iterator over one epoch's batches.
pub struct Loader {
    plan: Arc<Plan>,
    next: usize,
    pending: BTreeMap<usize, RawBatch>,
    rx: Option<Receiver<(usize, RawBatch)>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Start the worker threads for one epoch.
    ///
    /// # Panics
    /// When the config does not fit the dataset (see [`Loader::try_new`],
    /// which reports it as an error instead).
    pub fn new(ds: Arc<Dataset>, cfg: LoaderConfig) -> Self {
        match Self::try_new(ds, cfg) {
            Ok(loader) => loader,
            Err(e) => panic!("invalid loader config: {e}"),
        }
    }

    /// Start the worker threads, or say why the config does not fit the
    /// dataset (batch size 0, fewer classes than the labels need).
    pub fn try_new(ds: Arc<Dataset>, cfg: LoaderConfig) -> Result<Self, DataError> {
        cfg.check(ds.classes.len())?;
        let (order, num_batches) = cfg.epoch_order(ds.len());
        let plan = Arc::new(Plan {
            ds,
            cfg,
            order,
            num_batches,
        });
        let (tx, rx) = bounded(plan.cfg.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicUsize::new(0));
        let threads = plan.cfg.threads.max(1).min(num_batches.max(1));
        let workers = (0..threads)
            .map(|_| {
                let (plan, tx, stop, counter) =
                    (plan.clone(), tx.clone(), stop.clone(), counter.clone());
                std::thread::spawn(move || work(&plan, &tx, &stop, &counter))
            })
            .collect();
        Ok(Self {
            plan,
            next: 0,
            pending: BTreeMap::new(),
            rx: Some(rx),
            stop,
            workers,
        })
    }

    pub fn num_batches(&self) -> usize {
        self.plan.num_batches
    }

    /// Dataset indices in this epoch's order (batch after batch).
    pub fn order(&self) -> &[usize] {
        &self.plan.order
    }
}

/// A worker: claim the next batch number, build it, send it; stop when all
/// are claimed, when asked, or when the loader is gone.
fn work(plan: &Plan, tx: &Sender<(usize, RawBatch)>, stop: &AtomicBool, counter: &AtomicUsize) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let b = counter.fetch_add(1, Ordering::Relaxed);
        if b >= plan.num_batches {
            return;
        }
        let batch = build_batch(plan, b);
        if tx.send((b, batch)).is_err() {
            return;
        }
    }
}

fn build_batch(plan: &Plan, b: usize) -> RawBatch {
    let cfg = &plan.cfg;
    let ds = &plan.ds;
    let start = b * cfg.batch_size;
    let end = (start + cfg.batch_size).min(plan.order.len());
    let indices = &plan.order[start..end];
    let (h, w) = (ds.height, ds.width);
    let per_image = 3 * h * w;
    let mut images = vec![0f32; indices.len() * per_image];
    for (k, (&idx, out)) in indices
        .iter()
        .zip(images.chunks_exact_mut(per_image))
        .enumerate()
    {
        let mut rng = derive(cfg.seed, cfg.epoch, (start + k) as u64, Stream::Sample);
        let draw = cfg.augment.draw(&mut rng, h, w);
        augment::resized_crop_normalised(ds.image(idx), h, w, draw.crop, draw.flip, out);
        if let Some(rect) = draw.erase {
            augment::fill_noise(&mut rng, out, h, w, rect);
        }
    }
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(ds.labels[i])).collect();
    let targets = cfg.soft_targets().map(|(mix_cfg, f)| {
        let mut rng = derive(cfg.seed, cfg.epoch, b as u64, Stream::Mix);
        let mix = mix_batch(&mut rng, &mix_cfg, &mut images, indices.len(), h, w);
        mixed_targets(&labels, mix.lam, f.smoothing, f.num_classes)
    });
    RawBatch {
        images,
        labels,
        targets,
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.plan.num_batches {
            return None;
        }
        let raw = loop {
            if let Some(raw) = self.pending.remove(&self.next) {
                break raw;
            }
            let received = self.rx.as_ref().map(|rx| rx.recv());
            match received {
                Some(Ok((b, raw))) => {
                    self.pending.insert(b, raw);
                }
                _ => {
                    // Every worker is gone with batches missing: one panicked.
                    self.rx = None;
                    for handle in self.workers.drain(..) {
                        if let Err(panic) = handle.join() {
                            std::panic::resume_unwind(panic);
                        }
                    }
                    tracing::error!(batch = self.next, "loader workers stopped early");
                    self.next = self.plan.num_batches;
                    return None;
                }
            }
        };
        self.next += 1;
        let (h, w) = (self.plan.ds.height as i64, self.plan.ds.width as i64);
        let n = raw.labels.len() as i64;
        Some(Batch {
            images: Tensor::from_slice(&raw.images).view([n, 3, h, w]),
            labels: Tensor::from_slice(&raw.labels),
            targets: raw
                .targets
                .map(|t| Tensor::from_slice(&t).view([n, t.len() as i64 / n.max(1)])),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.num_batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    /// Stop the workers: the flag ends their loop, dropping the receiver
    /// unblocks any that wait to send. Then wait for them, so no thread
    /// outlives the loader.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Normalised `[n, 3, H, W]` f32 tensor of the given indices, no augmentation
/// (evaluation, reconstruction images). Panics on an index out of range.
pub fn to_tensor(ds: &Dataset, indices: &[usize]) -> Tensor {
    let per_image = 3 * ds.height * ds.width;
    let mut buf = vec![0f32; indices.len() * per_image];
    for (&i, out) in indices.iter().zip(buf.chunks_exact_mut(per_image)) {
        augment::normalised(ds, i, out);
    }
    Tensor::from_slice(&buf).view([indices.len() as i64, 3, ds.height as i64, ds.width as i64])
}
