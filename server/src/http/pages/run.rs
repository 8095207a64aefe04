//! One run: status and worker, progress, live charts, reconstructions with an
//! epoch slider, the config, the log, and cancel/retry. The page embeds the
//! history up to a cursor and its stream resumes right after that cursor.

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maelab_core::db::runs;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use super::rows::{self, EpochRow, ReconRow, RunRow, StepRow};
use super::{PageError, Reader, csrf_value, human_duration, render};
use crate::auth::extract::CsrfForm;
use crate::http::AppError;
use crate::http::AppState;
use crate::live::{self, Cursor};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/artifacts/{artifact_id}", get(artifact))
        .route("/runs/{id}/log.txt", get(log))
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
    pub train_loss: Vec<f64>,
    pub train_lr: Vec<f64>,
    pub test_loss: Vec<Option<f64>>,
    pub test_acc1: Vec<Option<f64>>,
    pub test_acc5: Vec<Option<f64>>,
    pub psnr: Vec<Option<f64>>,
    pub hf_ratio: Vec<Option<f64>>,
    pub epoch_seconds: Vec<f64>,
    pub images_per_second: Vec<Option<f64>>,
}

impl EpochColumns {
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
    recons: &'a [ReconRow],
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    run: RunRow,
    duration: String,
    config_json: String,
    parent: Option<(Uuid, Option<i32>)>,
    cancel_requested: bool,
    attempt: Option<i32>,
    /// The history as JSON, put in a data attribute (askama escapes it).
    history_json: String,
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
    let view = runs::get_run(db, run_id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("run {run_id}")))?;
    let run = rows::run_row(db, run_id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("run {run_id}")))?;
    let epochs = rows::epochs_after(db, run_id, -1).await?;
    let steps = rows::all_steps_after(db, run_id, -1).await?;
    let recons = rows::recons_after(db, run_id, -1).await?;
    let has_log: bool = sqlx::query(
        "select exists(select 1 from artifact where run_id = $1 and kind = 'log') as has",
    )
    .bind(run_id)
    .fetch_one(db)
    .await?
    .try_get("has")?;
    let cursor = Cursor {
        epoch: epochs.last().map_or(-1, |e| e.epoch),
        step: steps.last().map_or(-1, |s| s.step),
        recon: recons.last().map_or(-1, |r| r.artifact_id),
    };
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
    let config_json = serde_json::to_string_pretty(&view.config).unwrap_or_default();
    let active = matches!(run.status.as_str(), "queued" | "running");
    render(&RunPage {
        duration: run
            .duration_seconds()
            .map(human_duration)
            .unwrap_or_default(),
        config_json,
        parent: view.parent_run_id.map(|p| (p, view.parent_epoch)),
        cancel_requested: view.cancel_requested.unwrap_or(false),
        attempt: view.attempt,
        history_json,
        can_cancel: active,
        can_retry: matches!(run.status.as_str(), "failed" | "cancelled"),
        has_log,
        last_epoch_seconds: epochs
            .last()
            .map(|e| human_duration(e.epoch_seconds.round() as i64)),
        csrf: csrf_value(&headers),
        run,
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
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let exists: bool = sqlx::query_scalar("select exists(select 1 from run where run_id = $1)")
        .bind(run_id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
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
    let row = sqlx::query(
        "select media_type, sha256, bytes from artifact
         where run_id = $1 and artifact_id = $2 and kind in ('reconstruction', 'log')",
    )
    .bind(run_id)
    .bind(artifact_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(missing)?;
    send_artifact(&row, &headers, None)
}

/// The run's log.txt, as a download.
async fn log(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let row = sqlx::query(
        "select media_type, sha256, bytes from artifact
         where run_id = $1 and kind = 'log' order by created_at desc limit 1",
    )
    .bind(run_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| PageError::NotFound(format!("the log of run {run_id}")))?;
    send_artifact(&row, &HeaderMap::new(), Some("log.txt"))
}

fn send_artifact(
    row: &sqlx::postgres::PgRow,
    headers: &HeaderMap,
    download_as: Option<&str>,
) -> Result<Response, PageError> {
    let media_type: String = row.try_get("media_type")?;
    let sha: String = row.try_get("sha256")?;
    let etag = format!("\"{sha}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let bytes: Vec<u8> = row.try_get("bytes")?;
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, media_type)
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(name) = download_as {
        builder = builder.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        );
    }
    builder
        .body(Body::from(bytes))
        .map_err(|e| PageError::BadRequest(e.to_string()))
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<Vec<(String, String)>>, AppError>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let CsrfForm { token, .. } = post?;
    tracing::info!(%run_id, by = %token.name, "cancel from the run page");
    runs::cancel_run(&state.db, run_id).await?;
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<Vec<(String, String)>>, AppError>,
) -> Result<Response, PageError> {
    let run_id = parse_id(&id)?;
    let CsrfForm { token, .. } = post?;
    tracing::info!(%run_id, by = %token.name, "retry from the run page");
    runs::retry_run(&state.db, run_id).await?;
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}
