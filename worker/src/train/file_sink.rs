//! The sink of the standalone `train` command: log.txt (one JSON line per
//! epoch, the official MAE keys plus epoch seconds and images/second), the
//! reconstruction PNGs, and a progress line on the terminal (stderr).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::events::{Checkpoint, Control, EpochRow, Image, Sink, StepSample};

pub const LOG_FILE: &str = "log.txt";

pub struct FileSink {
    dir: PathBuf,
    log: File,
    total_epochs: u32,
    progress: bool,
    epoch_start: Option<(u32, Instant)>,
}

impl FileSink {
    /// Append to `dir/log.txt` (created with `dir`); `total_epochs` feeds the
    /// ETA. `progress` turns the terminal line on.
    pub fn new(dir: &Path, total_epochs: u32, progress: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            log,
            total_epochs,
            progress,
            epoch_start: None,
        })
    }
}

/// "1h02m", "3m07s", "12s".
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl Sink for FileSink {
    fn epoch(&mut self, row: &EpochRow) -> anyhow::Result<Control> {
        let line = serde_json::to_string(row).context("encoding the log row")?;
        writeln!(self.log, "{line}").context("writing log.txt")?;
        self.log.flush().context("writing log.txt")?;
        if self.progress {
            let mut msg = format!(
                "\repoch {}/{} loss {:.4} lr {:.2e} {:.0} img/s {}",
                row.epoch + 1,
                self.total_epochs,
                row.train_loss,
                row.train_lr,
                row.images_per_second,
                format_duration(row.epoch_seconds)
            );
            if let (Some(acc1), Some(acc5)) = (row.test_acc1, row.test_acc5) {
                msg.push_str(&format!(" test top-1 {acc1:.2}% top-5 {acc5:.2}%"));
            }
            eprintln!("{msg}\x1b[K");
        }
        self.epoch_start = None;
        Ok(Control::Continue)
    }

    fn step(&mut self, s: &StepSample) -> anyhow::Result<Control> {
        if !self.progress {
            return Ok(Control::Continue);
        }
        let (epoch, start) = match self.epoch_start {
            Some((e, t)) if e == s.epoch => (e, t),
            _ => {
                let now = Instant::now();
                self.epoch_start = Some((s.epoch, now));
                (s.epoch, now)
            }
        };
        let elapsed = start.elapsed().as_secs_f64();
        let eta = if s.progress > 0.0 {
            let per_epoch = elapsed / s.progress;
            let left_epochs = f64::from(self.total_epochs.saturating_sub(epoch + 1));
            per_epoch * (1.0 - s.progress) + per_epoch * left_epochs
        } else {
            f64::NAN
        };
        let eta = if eta.is_finite() {
            format_duration(eta)
        } else {
            "?".to_string()
        };
        eprint!(
            "\repoch {}/{} {:5.1}% loss {:.4} lr {:.2e} {:.0} img/s ETA {eta}\x1b[K",
            epoch + 1,
            self.total_epochs,
            100.0 * s.progress,
            s.train_loss,
            s.lr,
            s.images_per_second
        );
        Ok(Control::Continue)
    }

    fn image(&mut self, image: &Image) -> anyhow::Result<Control> {
        let path = self.dir.join(&image.name);
        std::fs::write(&path, &image.png).with_context(|| format!("writing {}", path.display()))?;
        Ok(Control::Continue)
    }

    fn checkpoint(&mut self, _checkpoint: &Checkpoint) -> anyhow::Result<Control> {
        // The trainer wrote the files into this folder already.
        Ok(Control::Continue)
    }
}
