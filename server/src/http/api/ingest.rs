//! Runs trained anywhere (issue 12, docs/ingest.md): create an external run,
//! send it batches of points, upload artifacts by streaming PUT with a
//! sha256 check, heartbeat and finish. The writes are
//! `maelab_core::db::ingest`'s; this module checks the requests and
//! translates HTTP.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use maelab_core::artifact_store::StoreError;
use maelab_core::config::RunKind;
use maelab_core::db::artifacts::NewStoredArtifact;
use maelab_core::db::ingest::{
    self, DEFAULT_LOST_AFTER_SECONDS, FinishStatus, IngestError, MAX_POINTS, NewExternalRun, Point,
};
use serde::{Deserialize, Serialize};

use super::extract::{self, StrictJson, StrictQuery};
use super::paths::RunPath;
use crate::auth::{Access, Submit};
use crate::http::{AppError, AppState};
use crate::read_model::{self, RunDetail};

/// The largest artifact a client may upload in one request.
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024 * 1024;

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid { field, reason } => {
                Self::Invalid(maelab_core::ConfigErrors::one(field, reason))
            }
            IngestError::NotFound(id) => Self::NotFound(format!("run {id}")),
            IngestError::Conflict(m) => Self::Conflict(m),
            IngestError::Db(e) => e.into(),
        }
    }
}

/// `POST /api/v1/runs/external`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateExternal {
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub kind: Option<RunKind>,
    /// Default: the config's `model` when it is a string, else `external`.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub client_run_id: Option<String>,
    #[serde(default)]
    pub lost_after_seconds: Option<i32>,
    #[serde(default)]
    pub parent_run: Option<uuid::Uuid>,
}

fn printable(field: &str, s: &str, max: usize) -> Result<(), AppError> {
    let n = s.chars().count();
    if s.trim().is_empty() || n > max || s.chars().any(char::is_control) {
        return Err(AppError::Invalid(maelab_core::ConfigErrors::one(
            field,
            format!("must be 1 to {max} printable characters"),
        )));
    }
    Ok(())
}

impl CreateExternal {
    fn check(self) -> Result<NewExternalRun, AppError> {
        printable("name", &self.name, 200)?;
        if self.tags.len() > 20 {
            return Err(AppError::Invalid(maelab_core::ConfigErrors::one(
                "tags",
                format!("has {} tags; at most 20", self.tags.len()),
            )));
        }
        for (i, t) in self.tags.iter().enumerate() {
            printable(&format!("tags[{i}]"), t, 50)?;
        }
        let config = self.config.unwrap_or_else(|| serde_json::json!({}));
        if !config.is_object() {
            return Err(AppError::Invalid(maelab_core::ConfigErrors::one(
                "config",
                "must be a JSON object",
            )));
        }
        let model = self
            .model
            .or_else(|| {
                config
                    .get("model")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "external".into());
        printable("model", &model, 100)?;
        if let Some(id) = &self.client_run_id {
            printable("client_run_id", id, 200)?;
        }
        let lost = self
            .lost_after_seconds
            .unwrap_or(DEFAULT_LOST_AFTER_SECONDS);
        if !(10..=604_800).contains(&lost) {
            return Err(AppError::Invalid(maelab_core::ConfigErrors::one(
                "lost_after_seconds",
                format!("{lost} is out of range; expected 10 to 604800"),
            )));
        }
        Ok(NewExternalRun {
            name: self.name,
            kind: self.kind.unwrap_or(RunKind::Pretrain),
            model,
            tags: self.tags,
            config,
            client_run_id: self.client_run_id,
            parent_run: self.parent_run,
            lost_after_seconds: lost,
        })
    }
}

async fn detail(state: &AppState, run_id: uuid::Uuid) -> Result<RunDetail, AppError> {
    read_model::runs::get_run(&state.db, run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run {run_id}")))
}

/// `POST /api/v1/runs/external`: 201 with the run, or 200 with the run an
/// earlier create with the same `client_run_id` made.
pub async fn create(
    Access { token, .. }: Access<Submit>,
    State(state): State<AppState>,
    StrictJson(body): StrictJson<CreateExternal>,
) -> Result<Response, AppError> {
    let run = body.check()?;
    let created = ingest::create(&state.db, &run, Some(&token.name)).await?;
    state.live.changes().tick();
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(detail(&state, created.run_id).await?)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/runs/{}", created.run_id)) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/runs/external`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    #[serde(default)]
    pub client_run_id: Option<String>,
}

/// `GET /api/v1/runs/external?client_run_id=ID`: the run this token created
/// with that id (404 when none), so a client can tell whether a create it
/// lost the answer to went through without creating one.
pub async fn find(
    Access { token, .. }: Access<Submit>,
    State(state): State<AppState>,
    StrictQuery(q): StrictQuery<FindQuery>,
) -> Result<Json<RunDetail>, AppError> {
    let Some(id) = q.client_run_id else {
        return Err(AppError::bad_request("client_run_id", "is required"));
    };
    printable("client_run_id", &id, 200)?;
    let run_id = ingest::find(&state.db, Some(&token.name), &id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run with client_run_id {id:?}")))?;
    Ok(Json(detail(&state, run_id).await?))
}

/// One point of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointIn {
    pub key: String,
    pub step: u64,
    pub value: f64,
    /// Unix seconds.
    #[serde(default)]
    pub wall_time: Option<f64>,
}

/// `POST /api/v1/runs/{run_id}/metrics`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub points: Vec<PointIn>,
}

/// What a batch did.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Distinct (key, step) points stored (a point repeated in the batch counts once).
    pub accepted: usize,
}

fn wall_time(i: usize, t: Option<f64>) -> Result<Option<DateTime<Utc>>, AppError> {
    let Some(t) = t else { return Ok(None) };
    let ok = t.is_finite() && (0.0..=253_402_300_799.0).contains(&t);
    let at = ok
        .then(|| DateTime::from_timestamp(t.trunc() as i64, (t.fract() * 1e9) as u32))
        .flatten();
    at.map(Some).ok_or_else(|| {
        AppError::Invalid(maelab_core::ConfigErrors::one(
            format!("points[{i}].wall_time"),
            format!("{t} is not Unix seconds between 1970 and 9999"),
        ))
    })
}

/// `POST /api/v1/runs/{run_id}/metrics`: stored whole or not at all, in a
/// transaction shared with concurrent batches; the notification follows the
/// commit (`crate::ingest_writer`).
pub async fn metrics(
    access: Access<Submit>,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    req: Request,
) -> Result<Json<Accepted>, AppError> {
    access.may_change_run(&state.db, run_id).await?;
    let value = extract::json_value(req, state.settings.body_limit).await?;
    // Count before parsing the points: a huge batch is refused as too large.
    if let Some(n) = value
        .get("points")
        .and_then(|p| p.as_array())
        .map(Vec::len)
        .filter(|n| *n > MAX_POINTS)
    {
        return Err(AppError::TooManyItems(format!(
            "the batch has {n} points; at most {MAX_POINTS} per request"
        )));
    }
    let batch: Batch = extract::from_value(value)?;
    let points = batch
        .points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Point {
                key: p.key,
                step: p.step,
                value: p.value,
                wall_time: wall_time(i, p.wall_time)?,
            })
        })
        .collect::<Result<Vec<Point>, AppError>>()?;
    let recorded = state.ingest.record(&state.db, run_id, &points).await?;
    Ok(Json(Accepted {
        accepted: recorded.points,
    }))
}

/// `POST /api/v1/runs/{run_id}/heartbeat`.
pub async fn heartbeat(
    access: Access<Submit>,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
) -> Result<Json<serde_json::Value>, AppError> {
    access.may_change_run(&state.db, run_id).await?;
    let status = ingest::heartbeat(&state.db, run_id).await?;
    Ok(Json(serde_json::json!({"status": status})))
}

/// `POST /api/v1/runs/{run_id}/finish`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub status: FinishStatus,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/runs/{run_id}/finish`.
pub async fn finish(
    access: Access<Submit>,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    StrictJson(body): StrictJson<Finish>,
) -> Result<Json<RunDetail>, AppError> {
    access.may_change_run(&state.db, run_id).await?;
    if let Some(r) = &body.reason
        && r.chars().count() > 2000
    {
        return Err(AppError::Invalid(maelab_core::ConfigErrors::one(
            "reason",
            "is over 2000 characters",
        )));
    }
    ingest::finish(&state.db, run_id, body.status, body.reason.as_deref()).await?;
    state.live.changes().tick();
    Ok(Json(detail(&state, run_id).await?))
}

/// The query of an upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Hex sha256 of the body.
    pub sha256: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub epoch: Option<i32>,
}

/// `PUT /api/v1/runs/{run_id}/artifacts/{name}?sha256=…&kind=…&epoch=…`:
/// the body streamed into the digest and the artifact store (never buffered
/// whole), kept only when the digest matches.
pub async fn upload(
    access: Access<Submit>,
    State(state): State<AppState>,
    Path((run_id, name)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<UploadQuery>,
    req: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let run_id = extract::run_id(&run_id)?;
    access.may_change_run(&state.db, run_id).await?;
    if !read_model::artifacts::valid_name(&name) {
        return Err(AppError::bad_request(
            "name",
            "an artifact name is 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
        ));
    }
    let expected = q.sha256.to_ascii_lowercase();
    if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AppError::bad_request("sha256", "must be 64 hex digits"));
    }
    let kind = q.kind.as_deref().unwrap_or("file");
    if !["reconstruction", "checkpoint", "log", "file"].contains(&kind) {
        return Err(AppError::bad_request(
            "kind",
            format!("`{kind}` is not reconstruction, checkpoint, log or file"),
        ));
    }
    if q.epoch.is_some_and(|e| e < 0) {
        return Err(AppError::bad_request("epoch", "must not be negative"));
    }
    let (parts, body) = req.into_parts();
    let media_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200 && !v.chars().any(char::is_control))
        .unwrap_or("application/octet-stream")
        .to_string();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ARTIFACT_BYTES as u64) {
        return Err(AppError::PayloadTooLarge(MAX_ARTIFACT_BYTES));
    }
    // Into the store first, under a fresh key: a digest mismatch or an
    // oversized body aborts the upload (nothing stored); the row follows.
    let key = maelab_core::artifact_store::key::new_key(run_id, &name)
        .map_err(|e| AppError::bad_request("name", e.to_string()))?;
    let body = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let object = state
        .artifacts
        .put_stream(&key, body, Some(&expected), Some(MAX_ARTIFACT_BYTES as u64))
        .await
        .map_err(upload_error)?;
    let stored = ingest::put_artifact(
        &state.db,
        run_id,
        &NewStoredArtifact {
            kind,
            epoch: q.epoch,
            name: &name,
            media_type: &media_type,
            object: &object,
        },
    )
    .await;
    let id = match stored {
        Ok(id) => id,
        Err(e) => {
            if let Err(d) = state.artifacts.delete(&object.key).await {
                tracing::warn!(key = object.key, error = %d, "deleting an upload whose row was refused");
            }
            return Err(e.into());
        }
    };
    // The object this upload replaced, if any.
    maelab_core::artifact_store::gc::sweep_quietly(&state.db, &state.artifacts).await;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "artifact_id": id, "run_id": run_id, "name": name, "kind": kind,
            "epoch": q.epoch, "media_type": media_type, "size_bytes": object.size,
            "sha256": object.sha256,
        })),
    ))
}

/// An upload the store refused, as an answer naming the field.
fn upload_error(e: StoreError) -> AppError {
    match e {
        StoreError::TooLarge { .. } => AppError::PayloadTooLarge(MAX_ARTIFACT_BYTES),
        StoreError::DigestMismatch { .. } => {
            AppError::Invalid(maelab_core::ConfigErrors::one("sha256", e.to_string()))
        }
        StoreError::Source(e) => AppError::bad_request("", format!("cannot read the body: {e}")),
        other => crate::http::artifact_body::store_error(other),
    }
}

/// `GET /api/v1/runs/{run_id}/metrics`'s query: no key lists the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsQuery {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub after: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GET /api/v1/runs/{run_id}/metrics`: the run's keys (grouped by prefix),
/// or with `key=K` that key's points by step (after `after`, at most `limit`).
pub async fn points(
    _: crate::auth::ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    StrictQuery(q): StrictQuery<PointsQuery>,
) -> Result<Response, AppError> {
    detail(&state, run_id).await?;
    let Some(key) = q.key else {
        let keys = read_model::points::keys(&state.db, run_id).await?;
        return Ok(Json(keys).into_response());
    };
    if key.is_empty() || key.chars().count() > ingest::MAX_KEY_CHARS {
        return Err(AppError::bad_request("key", "must be 1 to 250 characters"));
    }
    let limit = q.limit.unwrap_or(read_model::points::MAX_HISTORY);
    if !(1..=read_model::points::MAX_HISTORY).contains(&limit) {
        return Err(AppError::bad_request("limit", "must be 1 to 100000"));
    }
    let rows = read_model::points::history(&state.db, run_id, &key, q.after, limit).await?;
    Ok(Json(rows).into_response())
}
