//! Epoch and step metrics as charts, exports and `log.txt` read them.
//!
//! `log.txt` is regenerated from the epoch rows in the format of the MAE
//! reference code (facebookresearch/mae `main_pretrain.py`/`main_finetune.py`:
//! one JSON object per epoch, `train_*` keys, then `test_*`, then `epoch` and
//! `n_parameters`), so existing plotting scripts read maelab runs unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::ReadError;
use crate::cli::mae_log::python_json;

/// One epoch row. The MAE keys a run logged from outside may leave out
/// (`train_lr`, `train_loss`, `epoch_seconds`) are optional like the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EpochRow {
    pub epoch: i32,
    pub train_lr: Option<f64>,
    pub train_loss: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_acc1: Option<f64>,
    pub test_acc5: Option<f64>,
    pub n_parameters: Option<i64>,
    pub psnr: Option<f64>,
    pub hf_ratio: Option<f64>,
    pub epoch_seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    /// Further log.txt keys the trainer reported.
    pub extra: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// The numeric epoch columns, in CSV order; also the metrics a CLI bar
/// (`--fail-under test_acc1=70`) may name.
pub const EPOCH_COLUMNS: &[&str] = &[
    "epoch",
    "train_lr",
    "train_loss",
    "test_loss",
    "test_acc1",
    "test_acc5",
    "n_parameters",
    "psnr",
    "hf_ratio",
    "epoch_seconds",
    "images_per_second",
];

impl EpochRow {
    /// The value of a numeric column by name (see [`EPOCH_COLUMNS`]).
    pub fn value(&self, column: &str) -> Option<f64> {
        match column {
            "epoch" => Some(f64::from(self.epoch)),
            "train_lr" => self.train_lr,
            "train_loss" => self.train_loss,
            "test_loss" => self.test_loss,
            "test_acc1" => self.test_acc1,
            "test_acc5" => self.test_acc5,
            // Parameter counts fit f64's 53-bit mantissa.
            #[allow(clippy::cast_precision_loss)]
            "n_parameters" => self.n_parameters.map(|n| n as f64),
            "psnr" => self.psnr,
            "hf_ratio" => self.hf_ratio,
            "epoch_seconds" => self.epoch_seconds,
            "images_per_second" => self.images_per_second,
            _ => None,
        }
    }
}

/// One sampled training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StepRow {
    pub epoch: i32,
    pub step: i32,
    pub progress: f64,
    pub train_loss: f64,
    pub lr: f64,
    pub images_per_second: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

/// The columns of [`EpochRow`]; callers add `where` and `order by`.
const EPOCH_SELECT: &str = "
    select epoch, train_lr, train_loss, test_loss, test_acc1, test_acc5, n_parameters,
           psnr, hf_ratio, epoch_seconds, images_per_second, extra, recorded_at
    from epoch_metric";

/// Every epoch row of a run, oldest first (`after`: only epochs past it, for
/// a page or stream that already has the history).
pub async fn epochs(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i32>,
) -> Result<Vec<EpochRow>, sqlx::Error> {
    sqlx::query_as::<_, EpochRow>(&format!(
        "{EPOCH_SELECT} where run_id = $1 and ($2::int is null or epoch > $2) order by epoch"
    ))
    .bind(run_id)
    .bind(after)
    .fetch_all(pool)
    .await
}

/// One epoch row of a run (the live hub reads the row a trigger named).
pub async fn epoch(
    pool: &PgPool,
    run_id: Uuid,
    epoch: i32,
) -> Result<Option<EpochRow>, sqlx::Error> {
    sqlx::query_as::<_, EpochRow>(&format!("{EPOCH_SELECT} where run_id = $1 and epoch = $2"))
        .bind(run_id)
        .bind(epoch)
        .fetch_optional(pool)
        .await
}

/// Most step rows one API call returns.
pub const MAX_STEPS: i64 = 20_000;

/// Step rows one chunk of a page's history or a stream's catch-up holds.
pub const STEP_CHUNK: i64 = 5000;

/// Step rows of a run in step order, those after step `after` only (resume a
/// live chart without a gap or a duplicate), at most `limit`
/// (1..=[`MAX_STEPS`], default all of that).
pub async fn steps(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i32>,
    limit: Option<i64>,
) -> Result<Vec<StepRow>, ReadError> {
    let limit = limit.unwrap_or(MAX_STEPS);
    if !(1..=MAX_STEPS).contains(&limit) {
        return Err(ReadError::invalid(
            "limit",
            format!("must be between 1 and {MAX_STEPS}"),
        ));
    }
    Ok(steps_after(pool, run_id, after, limit).await?)
}

/// Up to `limit` step rows after step `after`, oldest first.
pub async fn steps_after(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i32>,
    limit: i64,
) -> Result<Vec<StepRow>, sqlx::Error> {
    step_rows(pool, run_id, after, limit, "asc").await
}

/// Every step row after `after`, read [`STEP_CHUNK`] rows at a time.
pub async fn all_steps(
    pool: &PgPool,
    run_id: Uuid,
    mut after: Option<i32>,
) -> Result<Vec<StepRow>, sqlx::Error> {
    let mut all = Vec::new();
    loop {
        let chunk = steps_after(pool, run_id, after, STEP_CHUNK).await?;
        let full = i64::try_from(chunk.len()).unwrap_or(i64::MAX) >= STEP_CHUNK;
        if let Some(last) = chunk.last() {
            after = Some(last.step);
        }
        all.extend(chunk);
        if !full {
            return Ok(all);
        }
    }
}

/// The newest `limit` step rows after `after`, oldest first. The live hub
/// uses it so a burst never makes it send a run's whole history.
pub async fn latest_steps(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i32>,
    limit: i64,
) -> Result<Vec<StepRow>, sqlx::Error> {
    let mut rows = step_rows(pool, run_id, after, limit, "desc").await?;
    rows.reverse();
    Ok(rows)
}

/// The first `limit` step rows after `after` in step order `order` (`asc`
/// or `desc`, a literal of this module).
async fn step_rows(
    pool: &PgPool,
    run_id: Uuid,
    after: Option<i32>,
    limit: i64,
    order: &'static str,
) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as::<_, StepRow>(&format!(
        "select epoch, step, progress, train_loss, lr, images_per_second, recorded_at
         from step_metric where run_id = $1 and ($2::int is null or step > $2)
         order by step {order} limit $3"
    ))
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Epoch rows as CSV: a header of [`EPOCH_COLUMNS`], one line per epoch,
/// empty cells for missing values.
pub fn epochs_csv(rows: &[EpochRow]) -> String {
    let mut out = EPOCH_COLUMNS.join(",");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = EPOCH_COLUMNS
            .iter()
            .map(|c| match *c {
                "epoch" => row.epoch.to_string(),
                "n_parameters" => row.n_parameters.map(|n| n.to_string()).unwrap_or_default(),
                other => row.value(other).map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The MAE reference's `log.txt`: one JSON object per epoch, written as
/// Python's `json.dumps` writes it.
pub fn log_txt(rows: &[EpochRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut pairs: Vec<(String, serde_json::Value)> = Vec::new();
        let optional = [
            ("train_lr", row.train_lr),
            ("train_loss", row.train_loss),
            ("test_loss", row.test_loss),
            ("test_acc1", row.test_acc1),
            ("test_acc5", row.test_acc5),
            ("test_psnr", row.psnr),
            ("test_hf_ratio", row.hf_ratio),
        ];
        pairs.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.into()))),
        );
        if let Some(extra) = row.extra.as_object() {
            pairs.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        pairs.push(("epoch".into(), row.epoch.into()));
        if let Some(n) = row.n_parameters {
            pairs.push(("n_parameters".into(), n.into()));
        }
        // Numbers as Python's json.dumps writes them (`1e-05`, `75.0`), so
        // an imported MAE log.txt comes back byte for byte.
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                let key = serde_json::Value::from(k.as_str());
                format!("{}: {}", python_json(&key), python_json(v))
            })
            .collect();
        out.push('{');
        out.push_str(&body.join(", "));
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: i32, acc: Option<f64>) -> EpochRow {
        EpochRow {
            epoch,
            train_lr: Some(0.001),
            train_loss: Some(0.5),
            test_loss: acc.map(|_| 1.25),
            test_acc1: acc,
            test_acc5: None,
            n_parameters: Some(1234),
            psnr: None,
            hf_ratio: None,
            epoch_seconds: Some(2.0),
            images_per_second: Some(100.0),
            extra: serde_json::json!({}),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn log_txt_is_one_mae_json_object_per_epoch_in_mae_key_order() {
        let text = log_txt(&[row(0, None), row(1, Some(42.5))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"train_lr": 0.001, "train_loss": 0.5, "epoch": 0, "n_parameters": 1234}"#
        );
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["test_acc1"], 42.5);
        assert!(lines[1].find("test_acc1").unwrap() < lines[1].find("\"epoch\"").unwrap());
    }

    #[test]
    fn log_txt_leaves_out_the_keys_a_run_did_not_log() {
        let mut partial = row(0, None);
        partial.train_lr = None;
        partial.epoch_seconds = None;
        let line = log_txt(&[partial]);
        assert_eq!(
            line.trim_end(),
            r#"{"train_loss": 0.5, "epoch": 0, "n_parameters": 1234}"#
        );
    }

    #[test]
    fn csv_has_a_header_and_empty_cells_for_missing_values() {
        let text = epochs_csv(&[row(3, None)]);
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), EPOCH_COLUMNS.join(","));
        let cells: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(cells.len(), EPOCH_COLUMNS.len());
        assert_eq!(cells[0], "3");
        assert_eq!(cells[4], "", "test_acc1 is missing");
        assert_eq!(cells[6], "1234");
    }
}
