//! One run: status and worker, progress, live charts, reconstructions with an
//! epoch slider, the config, the log, and cancel/retry. The page embeds the
//! history up to a cursor and its stream resumes right after that cursor.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maelab_core::db::ingest::EPOCH_KEYS;
use maelab_core::db::runs;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PageError, PageQuery, Reader, csrf_value, render};
use crate::auth::{CsrfForm, Submit};
use crate::format::human_duration;
use crate::http::AppError;
use crate::http::security_headers::{artifact_content_type, artifact_disposition};
use crate::http::{AppState, artifact_body};
use crate::live::{self, Cursor};
use crate::read_model::artifacts::{self, ArtifactFile, ArtifactInfo};
use crate::read_model::metrics::{self, EpochRow, StepRow};
use crate::read_model::points::{self, KeyInfo};
use crate::read_model::runs::run_exists;
use crate::read_model::system_samples;
use crate::read_model::{self, RunSummary};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/artifacts/{artifact_id}", get(artifact))
        .route("/runs/{id}/log.txt", get(log))
        .route("/runs/{id}/system.json", get(system))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/retry", post(retry))
}

/// An id from the URL of a `what` (run, study); anything that is not one is
/// a 404, like a missing one.
pub(crate) fn parse_uuid(what: &str, text: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(text).map_err(|_| PageError::NotFound(format!("{what} {text}")))
}

/// A run id from the URL.
pub(crate) fn parse_id(text: &str) -> Result<Uuid, PageError> {
    parse_uuid("run", text)
}

/// Epoch rows as columns (what uPlot draws, and half the bytes of rows).
#[derive(Debug, Default, Serialize)]
pub struct EpochColumns {
    pub epoch: Vec<i32>,
    pub train_loss: Vec<Option<f64>>,
    pub train_lr: Vec<Option<f64>>,
    pub test_loss: Vec<Option<f64>>,
    pub test_acc1: Vec<Option<f64>>,
    pub test_acc5: Vec<Option<f64>>,
    pub psnr: Vec<Option<f64>>,
    pub hf_ratio: Vec<Option<f64>>,
    pub epoch_seconds: Vec<Option<f64>>,
    pub images_per_second: Vec<Option<f64>>,
}

impl EpochColumns {
    /// The metric columns by name (the names the ingest API takes as keys).
    pub fn columns(&self) -> [(&'static str, &[Option<f64>]); 9] {
        [
            ("train_loss", &self.train_loss),
            ("train_lr", &self.train_lr),
            ("test_loss", &self.test_loss),
            ("test_acc1", &self.test_acc1),
            ("test_acc5", &self.test_acc5),
            ("psnr", &self.psnr),
            ("hf_ratio", &self.hf_ratio),
            ("epoch_seconds", &self.epoch_seconds),
            ("images_per_second", &self.images_per_second),
        ]
    }

    pub fn from_rows(rows: &[EpochRow]) -> Self {
        let mut c = Self::default();
        for r in rows {
            c.epoch.push(r.epoch);
            c.train_loss.push(r.train_loss);
            c.train_lr.push(r.train_lr);
            c.test_loss.push(r.test_loss);
            c.test_acc1.push(r.test_acc1);
            c.test_acc5.push(r.test_acc5);
            c.psnr.push(r.psnr);
            c.hf_ratio.push(r.hf_ratio);
            c.epoch_seconds.push(r.epoch_seconds);
            c.images_per_second.push(r.images_per_second);
        }
        c
    }
}

/// Step rows as columns.
#[derive(Debug, Default, Serialize)]
pub struct StepColumns {
    pub step: Vec<i32>,
    pub epoch: Vec<i32>,
    pub progress: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub lr: Vec<f64>,
    pub images_per_second: Vec<Option<f64>>,
}

impl StepColumns {
    fn from_rows(rows: &[StepRow]) -> Self {
        let mut c = Self::default();
        for r in rows {
            c.step.push(r.step);
            c.epoch.push(r.epoch);
            c.progress.push(r.progress);
            c.train_loss.push(r.train_loss);
            c.lr.push(r.lr);
            c.images_per_second.push(r.images_per_second);
        }
        c
    }
}

/// What the page's script starts from.
#[derive(Debug, Serialize)]
struct History<'a> {
    run_id: Uuid,
    cursor: String,
    status: &'a str,
    epochs_total: i32,
    /// Images in one epoch (for the ETA).
    images_per_epoch: u64,
    epochs: EpochColumns,
    steps: StepColumns,
    recons: &'a [ArtifactInfo],
}

/// Keys of one prefix (`train/loss` and `train/lr` are `train`): one chart.
pub struct MetricGroup {
    pub name: String,
    pub keys: Vec<KeyInfo>,
}

/// Whether the ingest API puts `key` in the epoch rows (an MAE `log.txt` key).
pub fn is_epoch_key(key: &str) -> bool {
    EPOCH_KEYS.iter().any(|(name, _, _)| *name == key)
}

/// The keys a client logged beyond the MAE epoch columns (those are charted
/// per epoch already), by group; `keys` comes sorted by group then key.
pub fn generic_groups(keys: Vec<KeyInfo>) -> Vec<MetricGroup> {
    let mut groups: Vec<MetricGroup> = Vec::new();
    for k in keys {
        if is_epoch_key(&k.key) {
            continue;
        }
        match groups.last_mut() {
            Some(g) if g.name == k.group => g.keys.push(k),
            _ => groups.push(MetricGroup {
                name: k.group.clone(),
                keys: vec![k],
            }),
        }
    }
    groups
}

/// What the generic charts' script starts from.
#[derive(Serialize)]
struct GenericCharts<'a> {
    run_id: Uuid,
    status: &'a str,
    /// Keys that are epoch columns, charted above: the script skips them.
    epoch_keys: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    run: RunSummary,
    duration: String,
    config_json: String,
    parent: Option<(Uuid, Option<i32>)>,
    cancel_requested: bool,
    attempt: Option<i32>,
    /// The history as JSON, put in a data attribute (askama escapes it).
    history_json: String,
    /// Logged keys beyond the epoch columns, one chart per group.
    metric_groups: Vec<MetricGroup>,
    /// [`GenericCharts`] as JSON, for a data attribute.
    generic_json: String,
    can_cancel: bool,
    can_retry: bool,
    has_log: bool,
    last_epoch_seconds: Option<String>,
    /// Repeated in the cancel and retry forms' hidden `csrf_token` field.
    csrf: String,
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let db = &state.db;
    let view = read_model::runs::get_run(db, run_id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("run {run_id}")))?;
    let epochs = metrics::epochs(db, run_id, None).await?;
    let steps = metrics::all_steps(db, run_id, None).await?;
    let recons = artifacts::reconstructions(db, run_id, None).await?;
    let has_log = artifacts::has_stored_log(db, run_id).await?;
    let metric_groups = generic_groups(points::keys(db, run_id).await?);
    let cursor = Cursor {
        epoch: epochs.last().map_or(-1, |e| e.epoch),
        step: steps.last().map_or(-1, |s| s.step),
        recon: recons.last().and_then(|r| r.artifact_id).unwrap_or(-1),
    };
    let run = &view.summary;
    let images_per_epoch = view
        .config
        .get("train_subset")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(50_000);
    let history = History {
        run_id,
        cursor: cursor.to_string(),
        status: &run.status,
        epochs_total: run.epochs_total,
        images_per_epoch,
        epochs: EpochColumns::from_rows(&epochs),
        steps: StepColumns::from_rows(&steps),
        recons: &recons,
    };
    let history_json = serde_json::to_string(&history)
        .map_err(|e| PageError::BadRequest(format!("cannot encode the history: {e}")))?;
    let generic_json = serde_json::to_string(&GenericCharts {
        run_id,
        status: &run.status,
        epoch_keys: EPOCH_KEYS.iter().map(|(k, _, _)| *k).collect(),
    })
    .unwrap_or_default();
    let config_json = serde_json::to_string_pretty(&view.config).unwrap_or_default();
    let active = matches!(run.status.as_str(), "queued" | "running");
    render(&RunPage {
        duration: run
            .duration_seconds
            .map(|s| human_duration(s as i64))
            .unwrap_or_default(),
        config_json,
        parent: run.parent_run_id.map(|p| (p, run.parent_epoch)),
        cancel_requested: view.cancel_requested.unwrap_or(false),
        attempt: view.attempt,
        history_json,
        metric_groups,
        generic_json,
        can_cancel: active,
        can_retry: matches!(run.status.as_str(), "failed" | "cancelled"),
        has_log,
        last_epoch_seconds: epochs
            .last()
            .and_then(|e| e.epoch_seconds)
            .map(|s| human_duration(s.round() as i64)),
        csrf: csrf_value(&headers),
        run: view.summary,
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct EventsQuery {
    /// The page's cursor; `Last-Event-ID` (a reconnect) wins over it.
    after: Option<String>,
}

async fn events(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
    PageQuery(q): PageQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    if !run_exists(&state.db, run_id).await? {
        return Err(PageError::NotFound(format!("run {run_id}")));
    }
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::parse)
        .or_else(|| q.after.as_deref().and_then(Cursor::parse))
        .unwrap_or_default();
    Ok(live::run_events(state.db.clone(), &state.live, run_id, cursor).into_response())
}

/// A stored reconstruction image (or log), with its sha256 as ETag.
async fn artifact(
    _: Reader,
    State(state): State<AppState>,
    Path((id, artifact_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let missing = || PageError::NotFound(format!("artifact {artifact_id} of run {run_id}"));
    let artifact_id: i64 = artifact_id.parse().map_err(|_| missing())?;
    let file = artifacts::viewable(&state.db, run_id, artifact_id)
        .await?
        .ok_or_else(missing)?;
    send_artifact(&state, file, &headers, None).await
}

/// The run's log.txt, as a download.
async fn log(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let file = artifacts::stored_log(&state.db, run_id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("the log of run {run_id}")))?;
    send_artifact(&state, file, &HeaderMap::new(), Some("log.txt")).await
}

/// The run's system figures (CPU, memory, GPU) over the run, for
/// `static/run_system.js`.
async fn system(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    if !run_exists(&state.db, run_id).await? {
        return Err(PageError::NotFound(format!("run {run_id}")));
    }
    let columns = system_samples::for_run(&state.db, run_id).await?;
    Ok(axum::Json(columns).into_response())
}

async fn send_artifact(
    state: &AppState,
    file: ArtifactFile,
    headers: &HeaderMap,
    download_as: Option<&str>,
) -> Result<Response, PageError> {
    let etag = format!("\"{}\"", file.info.sha256.clone().unwrap_or_default());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let media_type = file.info.media_type.clone();
    let name = download_as.unwrap_or(&file.info.name).to_string();
    let mut response =
        artifact_body::respond(&state.artifacts, file, &Method::GET, headers).await?;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, artifact_content_type(&media_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        artifact_disposition(&media_type, &name),
    );
    if let Ok(v) = etag.parse() {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<Vec<(String, String)>, Submit>, AppError>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let post = post?;
    post.may_change_run(&state.db, run_id).await?;
    let token = post.token;
    tracing::info!(%run_id, by = %token.name, "cancel from the run page");
    runs::cancel_run(&state.db, run_id).await?;
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<Vec<(String, String)>, Submit>, AppError>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let post = post?;
    post.may_change_run(&state.db, run_id).await?;
    let token = post.token;
    tracing::info!(%run_id, by = %token.name, "retry from the run page");
    runs::retry_run(&state.db, run_id).await?;
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}
