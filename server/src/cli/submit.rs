//! `maelab submit run.toml [--wait] [--fail-under test_acc1=70]`. `--wait`
//! follows the run's event stream ([`RunFollower`]), not a poll.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::watch::{RunFollower, RunUpdate, epoch_line};
use super::{Client, Conn, EXIT_BAR_MISSED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE};
use crate::read_model::RunDetail;
use crate::read_model::metrics::{EPOCH_COLUMNS, EpochRow};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The run config (TOML; the same keys as the API's JSON).
    pub config: PathBuf,
    /// Wait until the run finishes; exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    pub wait: bool,
    /// A bar the run must meet, `metric=value` (the best value over its
    /// epochs must be at least `value`); implies --wait; exit 2 if missed.
    /// Repeatable.
    #[arg(long = "fail-under", value_name = "METRIC=VALUE", value_parser = parse_bar)]
    pub fail_under: Vec<Bar>,
    /// Seconds between two looks at the run while waiting, if its event
    /// stream is unavailable (the stream is followed otherwise).
    #[arg(long, default_value_t = 5.0, value_parser = super::parse_seconds)]
    pub poll: f64,
    #[command(flatten)]
    pub conn: Conn,
}

/// A `--fail-under` bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub metric: String,
    pub value: f64,
}

/// Parse `metric=value`, the metric being an epoch column.
pub fn parse_bar(s: &str) -> Result<Bar, String> {
    let (metric, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected METRIC=VALUE (e.g. test_acc1=70), got `{s}`"))?;
    let metric = metric.trim();
    if !EPOCH_COLUMNS.contains(&metric) || metric == "epoch" {
        return Err(format!(
            "unknown metric `{metric}`; one of {}",
            EPOCH_COLUMNS[1..].join(", ")
        ));
    }
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("`{value}` is not a finite number"));
    }
    Ok(Bar {
        metric: metric.to_string(),
        value,
    })
}

/// The bars `epochs` misses, each with the best value reached (None: the
/// metric was never reported).
pub fn missed<'b>(bars: &'b [Bar], epochs: &[EpochRow]) -> Vec<(&'b Bar, Option<f64>)> {
    bars.iter()
        .filter_map(|bar| {
            let best = epochs
                .iter()
                .filter_map(|e| e.value(&bar.metric))
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                });
            match best {
                Some(b) if b >= bar.value => None,
                other => Some((bar, other)),
            }
        })
        .collect()
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let doc: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", args.config.display()))?;
    let body = serde_json::to_value(doc).context("converting the TOML config to JSON")?;
    let client = Client::new(&args.conn)?;
    let run: RunDetail = match client.post("/api/v1/runs", Some(&body)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the run was not submitted: {e:#}");
            return Ok(EXIT_USAGE);
        }
    };
    let id = run.summary.run_id;
    println!("{id}");
    eprintln!(
        "submitted {} ({} {} {}, {} epochs)",
        run.summary.name,
        run.summary.model,
        run.summary.kind,
        run.summary.preset,
        run.summary.epochs_total
    );
    if !args.wait && args.fail_under.is_empty() {
        return Ok(EXIT_OK);
    }
    let poll = Duration::from_secs_f64(args.poll.clamp(0.1, 60.0));
    let finished = wait(&client, id, poll).await?;
    judge(&client, &finished, &args.fail_under).await
}

/// Follow the run's event stream until it reaches a final status, reporting
/// each status change and each finished epoch; then read the run.
pub async fn wait(client: &Client, id: uuid::Uuid, poll: Duration) -> anyhow::Result<RunDetail> {
    let mut follower = RunFollower::new(client, id, poll);
    while let Some(update) = follower.next().await? {
        match update {
            RunUpdate::Status(status) => eprintln!("{id}: {status}"),
            RunUpdate::Epoch(e) => eprintln!("{id}: {}", epoch_line(&e)),
        }
    }
    client.get(&format!("/api/v1/runs/{id}")).await
}

/// The exit code for a finished run: 1 if it did not succeed, 2 if it missed
/// a bar, 0 otherwise.
pub async fn judge(client: &Client, run: &RunDetail, bars: &[Bar]) -> anyhow::Result<u8> {
    let id = run.summary.run_id;
    if run.summary.status != "succeeded" {
        eprintln!(
            "run {id} {}: {}",
            run.summary.status,
            run.summary.error.as_deref().unwrap_or("no reason given")
        );
        return Ok(EXIT_RUN_FAILED);
    }
    if bars.is_empty() {
        eprintln!("run {id} succeeded");
        return Ok(EXIT_OK);
    }
    let epochs: Vec<EpochRow> = client.get(&format!("/api/v1/runs/{id}/epochs")).await?;
    let misses = missed(bars, &epochs);
    for (bar, best) in &misses {
        match best {
            Some(b) => eprintln!(
                "bar missed: best {} is {b}, under {}",
                bar.metric, bar.value
            ),
            None => eprintln!("bar missed: the run never reported {}", bar.metric),
        }
    }
    if misses.is_empty() {
        eprintln!("run {id} succeeded and met every bar");
        Ok(EXIT_OK)
    } else {
        Ok(EXIT_BAR_MISSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: i32, acc1: Option<f64>) -> EpochRow {
        EpochRow {
            epoch: e,
            train_lr: Some(0.1),
            train_loss: Some(1.0),
            test_loss: None,
            test_acc1: acc1,
            test_acc5: None,
            n_parameters: None,
            psnr: None,
            hf_ratio: None,
            epoch_seconds: Some(1.0),
            images_per_second: None,
            extra: serde_json::json!({}),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn bars_parse_and_refuse_unknown_metrics() {
        assert_eq!(
            parse_bar("test_acc1=70").unwrap(),
            Bar {
                metric: "test_acc1".into(),
                value: 70.0
            }
        );
        assert!(parse_bar("test_acc1").is_err());
        assert!(parse_bar("accuracy=70").is_err());
        assert!(parse_bar("test_acc1=high").is_err());
        assert!(parse_bar("test_acc1=NaN").is_err());
    }

    #[test]
    fn a_bar_is_judged_on_the_best_epoch() {
        let bar = [parse_bar("test_acc1=70").unwrap()];
        let epochs = [
            epoch(0, Some(50.0)),
            epoch(1, Some(72.0)),
            epoch(2, Some(69.0)),
        ];
        assert!(missed(&bar, &epochs).is_empty());
        let low = [epoch(0, Some(50.0)), epoch(1, Some(69.9))];
        assert_eq!(missed(&bar, &low)[0].1, Some(69.9));
        let never = [epoch(0, None)];
        assert_eq!(missed(&bar, &never)[0].1, None);
    }
}
