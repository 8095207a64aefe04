//! `maelab watch <run>`: one line per finished epoch and a progress bar for
//! the current one, until the run ends. Epochs and status changes come from
//! the run's event stream (`/api/v1/runs/{id}/events`, [`RunFollower`]); the
//! progress bar reads the sampled step rows every `--poll` seconds while the
//! run trains. Exit code as for `submit --wait`.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use uuid::Uuid;

use super::sse::{Follow, SseEvent, Step};
use super::submit::{Bar, judge, parse_bar};
use super::{Client, Conn};
use crate::read_model::RunDetail;
use crate::read_model::metrics::{EpochRow, StepRow};

#[derive(Debug, Args)]
pub struct WatchArgs {
    pub run_id: String,
    /// Bars to judge the run by when it ends (as for submit).
    #[arg(long = "fail-under", value_name = "METRIC=VALUE", value_parser = parse_bar)]
    pub fail_under: Vec<Bar>,
    /// Seconds between two refreshes of the progress bar (and between two
    /// looks at the run if its event stream is unavailable).
    #[arg(long, default_value_t = 1.0, value_parser = super::parse_seconds)]
    pub poll: f64,
    #[command(flatten)]
    pub conn: Conn,
}

/// `[#######.............]` for a fraction in 0..=1.
pub fn bar(fraction: f64, width: usize) -> String {
    // Truncation is what we want: a cell fills once it is complete.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let full = ((fraction.clamp(0.0, 1.0) * width as f64) as usize).min(width);
    format!("[{}{}]", "#".repeat(full), ".".repeat(width - full))
}

/// One finished epoch, as `watch` prints it (what the run did not log is left out).
pub fn epoch_line(e: &EpochRow) -> String {
    let parts = [
        e.train_loss.map(|l| format!("loss {l:.4}")),
        e.train_lr.map(|lr| format!("lr {lr:.2e}")),
        e.epoch_seconds.map(|s| format!("{s:.1}s")),
        e.test_acc1.map(|a| format!("top-1 {a:.2}")),
        e.test_acc5.map(|a| format!("top-5 {a:.2}")),
        e.psnr.map(|p| format!("psnr {p:.2}")),
        e.images_per_second.map(|ips| format!("{ips:.0} img/s")),
    ];
    let mut line = format!("epoch {:>4}", e.epoch);
    for part in parts.into_iter().flatten() {
        line.push_str("  ");
        line.push_str(&part);
    }
    line
}

/// What following a run reports, in order.
#[derive(Debug, Clone)]
pub enum RunUpdate {
    /// The run's status changed.
    Status(String),
    /// An epoch finished.
    Epoch(Box<EpochRow>),
}

fn terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

#[derive(Deserialize)]
struct StatusData {
    status: String,
}

/// Follows one run through its event stream: every epoch once, in order,
/// and each status change, until a final status. A dropped stream is
/// reopened after the last epoch seen (`Last-Event-ID`); meanwhile, and for
/// good after repeated drops, the run is read from the API instead.
pub struct RunFollower {
    client: Client,
    run_id: Uuid,
    follow: Follow,
    last_epoch: Option<i32>,
    status: Option<String>,
    ready: VecDeque<RunUpdate>,
    finished: bool,
}

impl RunFollower {
    /// `poll`: seconds between two looks when the stream is unavailable.
    pub fn new(client: &Client, run_id: Uuid, poll: Duration) -> Self {
        Self {
            follow: Follow::new(
                client.clone(),
                format!("/api/v1/runs/{run_id}/events"),
                poll,
            ),
            client: client.clone(),
            run_id,
            last_epoch: None,
            status: None,
            ready: VecDeque::new(),
            finished: false,
        }
    }

    /// The next update; None once the run reached a final status and every
    /// update before it was returned. Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<Option<RunUpdate>> {
        loop {
            if let Some(u) = self.ready.pop_front() {
                return Ok(Some(u));
            }
            if self.finished {
                return Ok(None);
            }
            match self.follow.next().await? {
                Step::Event(ev) => self.on_event(&ev),
                Step::Look => {
                    let looked = self.look().await;
                    self.follow.looked(looked)?;
                }
            }
        }
    }

    fn on_event(&mut self, ev: &SseEvent) {
        match ev.event.as_str() {
            "epoch" => match serde_json::from_str::<EpochRow>(&ev.data) {
                Ok(row) => self.push_epoch(row),
                Err(e) => tracing::debug!(error = %e, "undecodable epoch event"),
            },
            "status" => match serde_json::from_str::<StatusData>(&ev.data) {
                Ok(s) => self.push_status(s.status),
                Err(e) => tracing::debug!(error = %e, "undecodable status event"),
            },
            // `error`: the server ends the stream after it; the drop is handled then.
            _ => {}
        }
    }

    fn push_epoch(&mut self, row: EpochRow) {
        if Some(row.epoch) > self.last_epoch {
            self.last_epoch = Some(row.epoch);
            self.follow.resume_after(Some(row.epoch.to_string()));
            self.ready.push_back(RunUpdate::Epoch(Box::new(row)));
        }
    }

    fn push_status(&mut self, status: String) {
        self.finished = terminal(&status);
        if self.status.as_deref() != Some(status.as_str()) {
            self.status = Some(status.clone());
            self.ready.push_back(RunUpdate::Status(status));
        }
    }

    /// Read the status, then the epochs after the last one seen (a final
    /// status read first means every epoch is already written). Changes
    /// nothing unless both reads succeed.
    async fn look(&mut self) -> anyhow::Result<()> {
        let id = self.run_id;
        let run: RunDetail = self.client.get(&format!("/api/v1/runs/{id}")).await?;
        let after = self
            .last_epoch
            .map(|e| format!("?after={e}"))
            .unwrap_or_default();
        let epochs: Vec<EpochRow> = self
            .client
            .get(&format!("/api/v1/runs/{id}/epochs{after}"))
            .await?;
        for e in epochs {
            self.push_epoch(e);
        }
        self.push_status(run.summary.status);
        Ok(())
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<u8> {
    let id = uuid::Uuid::parse_str(args.run_id.trim())
        .map_err(|_| anyhow::anyhow!("`{}` is not a run id (a UUID)", args.run_id))?;
    let client = Client::new(&args.conn)?;
    let poll = Duration::from_secs_f64(args.poll.clamp(0.1, 60.0));
    // The run must exist (exit 3 otherwise), and its length labels the bar.
    let mut run: RunDetail = client.get(&format!("/api/v1/runs/{id}")).await?;
    let mut follower = RunFollower::new(&client, id, poll);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step: Option<i32> = None;
    let mut err = std::io::stderr();
    // The bar redraws one line in place: only on a terminal. A CI log gets
    // the epoch and status lines alone, without escape codes.
    let live_bar = err.is_terminal();
    let clear = if live_bar { "\r\x1b[2K" } else { "" };
    loop {
        tokio::select! {
            update = follower.next() => match update? {
                Some(RunUpdate::Epoch(e)) => {
                    // Clear the progress bar line, then print the epoch.
                    let _ = write!(err, "{clear}");
                    println!("{}", epoch_line(&e));
                }
                Some(RunUpdate::Status(status)) => {
                    let _ = write!(err, "{clear}");
                    let _ = writeln!(err, "{id}: {status}");
                    run.summary.status = status;
                }
                None => break,
            },
            _ = ticker.tick(), if live_bar && run.summary.status == "running" => {
                let step_after = last_step.map(|s| format!("&after={s}")).unwrap_or_default();
                let Ok(steps) = client
                    .get::<Vec<StepRow>>(&format!("/api/v1/runs/{id}/steps?limit=20000{step_after}"))
                    .await
                else {
                    continue;
                };
                if let Some(s) = steps.last() {
                    last_step = Some(s.step);
                    let _ = write!(
                        err,
                        "\r\x1b[2K{} epoch {}/{} {:>3.0}%  loss {:.4}{}",
                        bar(s.progress, 30),
                        s.epoch + 1,
                        run.summary.epochs_total,
                        s.progress * 100.0,
                        s.train_loss,
                        s.images_per_second
                            .map(|v| format!("  {v:.0} img/s"))
                            .unwrap_or_default()
                    );
                    let _ = err.flush();
                }
            }
        }
    }
    let _ = write!(err, "{clear}");
    let finished: RunDetail = client.get(&format!("/api/v1/runs/{id}")).await?;
    judge(&client, &finished, &args.fail_under).await
}

#[cfg(test)]
mod tests {
    use super::{EpochRow, bar, epoch_line};

    #[test]
    fn epoch_lines_leave_out_what_the_run_did_not_log() {
        let mut e = EpochRow {
            epoch: 3,
            train_lr: Some(1.5e-4),
            train_loss: Some(0.61234),
            test_loss: None,
            test_acc1: Some(55.5),
            test_acc5: None,
            n_parameters: None,
            psnr: None,
            hf_ratio: None,
            epoch_seconds: Some(12.34),
            images_per_second: Some(4000.0),
            extra: serde_json::json!({}),
            recorded_at: chrono::Utc::now(),
        };
        assert_eq!(
            epoch_line(&e),
            "epoch    3  loss 0.6123  lr 1.50e-4  12.3s  top-1 55.50  4000 img/s"
        );
        (e.train_lr, e.epoch_seconds) = (None, None);
        assert_eq!(
            epoch_line(&e),
            "epoch    3  loss 0.6123  top-1 55.50  4000 img/s"
        );
    }

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(bar(0.0, 4), "[....]");
        assert_eq!(bar(0.5, 4), "[##..]");
        assert_eq!(bar(1.0, 4), "[####]");
        assert_eq!(bar(7.0, 4), "[####]");
    }
}
