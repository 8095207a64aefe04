//! `maelab watch <run>`: one line per finished epoch and a progress bar for
//! the current one (from the sampled step rows), until the run ends. Exit
//! code as for `submit --wait`.

use std::io::Write;
use std::time::Duration;

use clap::Args;

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
    /// Seconds between two looks.
    #[arg(long, default_value_t = 1.0)]
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

fn epoch_line(e: &EpochRow) -> String {
    let mut line = format!(
        "epoch {:>4}  loss {:.4}  lr {:.2e}  {:.1}s",
        e.epoch, e.train_loss, e.train_lr, e.epoch_seconds
    );
    if let Some(a) = e.test_acc1 {
        line.push_str(&format!("  top-1 {a:.2}"));
    }
    if let Some(a) = e.test_acc5 {
        line.push_str(&format!("  top-5 {a:.2}"));
    }
    if let Some(p) = e.psnr {
        line.push_str(&format!("  psnr {p:.2}"));
    }
    if let Some(ips) = e.images_per_second {
        line.push_str(&format!("  {ips:.0} img/s"));
    }
    line
}

pub async fn run(args: WatchArgs) -> anyhow::Result<u8> {
    let id = uuid::Uuid::parse_str(args.run_id.trim())
        .map_err(|_| anyhow::anyhow!("`{}` is not a run id (a UUID)", args.run_id))?;
    let client = Client::new(&args.conn)?;
    let poll = Duration::from_secs_f64(args.poll.clamp(0.1, 60.0));
    let mut last_epoch: Option<i32> = None;
    let mut last_step: Option<i32> = None;
    let mut err = std::io::stderr();
    loop {
        let run: RunDetail = client.get(&format!("/api/v1/runs/{id}")).await?;
        let after = last_epoch
            .map(|e| format!("?after={e}"))
            .unwrap_or_default();
        let epochs: Vec<EpochRow> = client
            .get(&format!("/api/v1/runs/{id}/epochs{after}"))
            .await?;
        for e in &epochs {
            // Clear the progress bar line, then print the epoch.
            let _ = write!(err, "\r\x1b[2K");
            println!("{}", epoch_line(e));
            last_epoch = Some(e.epoch);
        }
        let step_after = last_step.map(|s| format!("&after={s}")).unwrap_or_default();
        let steps: Vec<StepRow> = client
            .get(&format!("/api/v1/runs/{id}/steps?limit=20000{step_after}"))
            .await?;
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
        if matches!(
            run.summary.status.as_str(),
            "succeeded" | "failed" | "cancelled"
        ) {
            let _ = writeln!(err);
            return judge(&client, &run, &args.fail_under).await;
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(bar(0.0, 4), "[....]");
        assert_eq!(bar(0.5, 4), "[##..]");
        assert_eq!(bar(1.0, 4), "[####]");
        assert_eq!(bar(7.0, 4), "[####]");
    }
}
