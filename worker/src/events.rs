//! Everything the trainer emits goes through [`Sink`]: epoch rows, step
//! samples, reconstruction images and checkpoints. The standalone `train`
//! command writes them to a folder and the terminal; the queue worker writes
//! the same events to PostgreSQL, fenced by its lease.

use std::path::PathBuf;

use serde::Serialize;

/// One line of log.txt: the official MAE keys plus maelab's extras.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRow {
    pub epoch: u32,
    pub train_lr: f64,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_acc1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_acc5: Option<f64>,
    pub n_parameters: i64,
    /// PSNR in dB over the masked patches of the fixed reconstruction set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psnr: Option<f64>,
    /// High-frequency energy of reconstructions / of originals (1.0: as sharp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hf_ratio: Option<f64>,
    pub epoch_seconds: f64,
    pub images_per_second: f64,
}

/// A sampled training step, for live curves and the progress bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSample {
    pub epoch: u32,
    /// Optimizer step counted from the start of the run.
    pub step: u64,
    /// Fraction of the current epoch done, 0..=1.
    pub progress: f64,
    pub train_loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
}

/// A PNG the trainer made (reconstruction triplets of the fixed test images).
#[derive(Debug, Clone)]
pub struct Image {
    pub epoch: u32,
    /// File name, e.g. `recon-epoch-0003.png`.
    pub name: String,
    pub png: Vec<u8>,
}

/// A checkpoint written at the end of an epoch: the safetensors file and the
/// small JSON of epoch and optimizer state beside it, both in the run's folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub epoch: u32,
    pub weights: PathBuf,
    pub state: PathBuf,
}

/// What the sink tells the trainer after each event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop now; the reason says why (cancelled, lease lost, shutting down).
    Stop(StopReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    LeaseLost,
    /// SIGTERM: checkpoint was written, the job goes back on the queue.
    Shutdown,
}

/// Receives the trainer's events. Errors are the sink's own (I/O, database);
/// the trainer stops on them.
pub trait Sink {
    fn epoch(&mut self, row: &EpochRow) -> anyhow::Result<Control>;
    fn step(&mut self, sample: &StepSample) -> anyhow::Result<Control>;
    fn image(&mut self, image: &Image) -> anyhow::Result<Control>;
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<Control>;
}
