//! Compare runs: pick them, overlay their per-epoch curves, read the study's
//! table (model, parameters, best top-1/top-5, epochs, training time,
//! images/s) and look at reconstructions of the same images at one epoch.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use uuid::Uuid;

use super::run::EpochColumns;
use super::{PageError, Reader, human_duration, render};
use crate::http::AppState;
use crate::read_model::artifacts::{self, ArtifactInfo};
use crate::read_model::{RunFilter, RunSummary, metrics, runs};

/// Most runs one comparison overlays.
const MAX_RUNS: usize = 12;

/// Runs offered to pick from (the newest).
const CHOICES: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/compare", get(show))
}

pub struct Column {
    pub run: RunSummary,
    pub training_time: String,
    pub recons: Vec<ArtifactInfo>,
}

#[derive(Serialize)]
struct Series<'a> {
    run_id: Uuid,
    name: &'a str,
    epochs: EpochColumns,
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    choices: Vec<(RunSummary, bool)>,
    columns: Vec<Column>,
    epoch: Option<i32>,
    epochs: Vec<i32>,
    series_json: String,
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let db = &state.db;
    let mut picked: Vec<Uuid> = Vec::new();
    for (k, v) in &params {
        if k == "run" {
            let id =
                Uuid::parse_str(v.trim()).map_err(|_| PageError::NotFound(format!("run {v}")))?;
            if !picked.contains(&id) && picked.len() < MAX_RUNS {
                picked.push(id);
            }
        }
    }
    let wanted_epoch: Option<i32> = params
        .iter()
        .find(|(k, _)| k == "epoch")
        .and_then(|(_, v)| v.parse().ok());
    let recent = runs::list_runs(
        db,
        &RunFilter {
            limit: Some(CHOICES),
            ..RunFilter::default()
        },
    )
    .await?
    .runs;
    let mut columns = Vec::new();
    let mut series = Vec::new();
    for id in &picked {
        let run = runs::summary(db, *id)
            .await?
            .ok_or_else(|| PageError::NotFound(format!("run {id}")))?;
        let epochs = metrics::epochs(db, *id, None).await?;
        let recons = artifacts::reconstructions(db, *id, None).await?;
        series.push((
            run.run_id,
            run.name.clone(),
            EpochColumns::from_rows(&epochs),
        ));
        columns.push(Column {
            training_time: run
                .train_seconds
                .map(|s| human_duration(s.round() as i64))
                .unwrap_or_default(),
            run,
            recons,
        });
    }
    // Epochs with reconstructions in every picked run; default the latest.
    let mut common: Option<Vec<i32>> = None;
    for c in &columns {
        let mut mine: Vec<i32> = c.recons.iter().filter_map(|r| r.epoch).collect();
        mine.sort_unstable();
        mine.dedup();
        common = Some(match common {
            None => mine,
            Some(prev) => prev.into_iter().filter(|e| mine.contains(e)).collect(),
        });
    }
    let epochs = common.unwrap_or_default();
    let epoch = wanted_epoch
        .filter(|e| epochs.contains(e))
        .or_else(|| epochs.last().copied());
    for c in &mut columns {
        c.recons.retain(|r| r.epoch == epoch);
    }
    let series_json = serde_json::to_string(
        &series
            .iter()
            .map(|(run_id, name, epochs)| Series {
                run_id: *run_id,
                name,
                epochs: EpochColumns {
                    epoch: epochs.epoch.clone(),
                    train_loss: epochs.train_loss.clone(),
                    test_loss: epochs.test_loss.clone(),
                    test_acc1: epochs.test_acc1.clone(),
                    test_acc5: epochs.test_acc5.clone(),
                    psnr: epochs.psnr.clone(),
                    hf_ratio: epochs.hf_ratio.clone(),
                    ..EpochColumns::default()
                },
            })
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into());
    let choices = recent
        .into_iter()
        .map(|r| {
            let on = picked.contains(&r.run_id);
            (r, on)
        })
        .collect();
    render(&ComparePage {
        choices,
        columns,
        epoch,
        epochs,
        series_json,
    })
}
