//! Compare runs: pick them, overlay their per-epoch curves, read the study's
//! table (model, parameters, best top-1/top-5, epochs, training time,
//! images/s), overlay any metric key of theirs (epoch columns and the keys
//! clients logged) and look at reconstructions of the same images at one epoch.

use std::collections::BTreeSet;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use uuid::Uuid;

use super::run::{EpochColumns, is_epoch_key};
use super::{PageError, Reader, render};
use crate::format::{human_duration, thousands};
use crate::http::AppState;
use crate::read_model::artifacts::{self, ArtifactInfo};
use crate::read_model::{RunFilter, RunSummary, metrics, points, runs};

/// Most runs one comparison overlays.
const MAX_RUNS: usize = 12;

/// Runs offered to pick from (the newest).
const CHOICES: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/compare", get(show))
}

pub struct Column {
    pub run: RunSummary,
    /// `n_parameters` with thin separators, or empty.
    pub parameters: String,
    pub training_time: String,
    pub recons: Vec<ArtifactInfo>,
}

#[derive(Serialize)]
struct Series {
    run_id: Uuid,
    name: String,
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
    /// The overlay's choices: epoch columns some run has values in, then
    /// the other keys clients logged for any of the runs.
    epoch_keys: Vec<&'static str>,
    logged_keys: Vec<String>,
    /// The key overlaid first (`?key=`, else the first logged key).
    chosen: Option<String>,
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let db = &state.db;
    let mut picked: Vec<Uuid> = Vec::new();
    // `run=A&run=B` from the picker's checkboxes; `runs=A,B` as people type it.
    let named = params.iter().flat_map(|(k, v)| match k.as_str() {
        "run" => vec![v.as_str()],
        "runs" => v.split(',').filter(|s| !s.trim().is_empty()).collect(),
        _ => Vec::new(),
    });
    for v in named {
        let id = Uuid::parse_str(v.trim()).map_err(|_| PageError::NotFound(format!("run {v}")))?;
        if !picked.contains(&id) && picked.len() < MAX_RUNS {
            picked.push(id);
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
    let mut logged = BTreeSet::new();
    for id in &picked {
        let run = runs::summary(db, *id)
            .await?
            .ok_or_else(|| PageError::NotFound(format!("run {id}")))?;
        let epochs = metrics::epochs(db, *id, None).await?;
        let recons = artifacts::reconstructions(db, *id, None).await?;
        logged.extend(points::keys(db, *id).await?.into_iter().map(|k| k.key));
        series.push(Series {
            run_id: run.run_id,
            name: run.name.clone(),
            epochs: EpochColumns::from_rows(&epochs),
        });
        columns.push(Column {
            parameters: run.n_parameters.map(thousands).unwrap_or_default(),
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
    let epoch_keys: Vec<&'static str> = EpochColumns::default()
        .columns()
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| {
            series.iter().any(|s| {
                s.epochs
                    .columns()
                    .iter()
                    .any(|(k, values)| k == key && values.iter().any(Option::is_some))
            })
        })
        .collect();
    let logged_keys: Vec<String> = logged
        .into_iter()
        .filter(|k| !epoch_keys.contains(&k.as_str()))
        .collect();
    let chosen = params
        .iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.clone())
        .filter(|k| epoch_keys.contains(&k.as_str()) || logged_keys.contains(k))
        .or_else(|| logged_keys.iter().find(|k| !is_epoch_key(k)).cloned());
    let series_json = serde_json::to_string(&series).unwrap_or_else(|_| "[]".into());
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
        epoch_keys,
        logged_keys,
        chosen,
    })
}
