//! `/api/v1/runs`: create (the config as JSON, validated by the same
//! `RunConfig` code the worker uses), list, get, cancel, retry. Creation and
//! transitions go through `maelab_core::db::runs`, which owns the run and job
//! writes; this module only translates HTTP.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maelab_core::RunConfig;
use maelab_core::db::queue::CancelOutcome;
use maelab_core::db::runs::{self, RunError};
use serde::Serialize;

use super::extract::{self, StrictQuery};
use super::paths::RunPath;
use crate::auth::{Access, ReadAccess, Submit};
use crate::http::{AppError, AppState};
use crate::read_model::{self, RunDetail, RunFilter, RunPage};

impl From<RunError> for AppError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(errors) => Self::Invalid(errors),
            RunError::NotFound(id) => Self::NotFound(format!("run {id}")),
            RunError::Conflict(m) => Self::Conflict(m),
            RunError::Db(e) => e.into(),
        }
    }
}

async fn detail(state: &AppState, run_id: uuid::Uuid) -> Result<RunDetail, AppError> {
    read_model::runs::get_run(&state.db, run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run {run_id}")))
}

/// `POST /api/v1/runs`: 201 with the run and its `Location`.
pub async fn create(
    Access { token, .. }: Access<Submit>,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, AppError> {
    let value = extract::json_value(req, state.settings.body_limit).await?;
    let config = RunConfig::from_json_value(value)
        .map_err(|e| AppError::Invalid(extract::with_fields(e)))?;
    let created = runs::create_run(&state.db, &config, Some(&token.name)).await?;
    // The notification reaches the hub a moment later; this client's next
    // list must already show the run.
    state.live.changes().tick();
    let run = detail(&state, created.run_id).await?;
    let mut response = (StatusCode::CREATED, Json(run)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/runs/{}", created.run_id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/runs`: filters, search, sort, pagination (see [`RunFilter`]).
pub async fn list(
    _: ReadAccess,
    State(state): State<AppState>,
    StrictQuery(filter): StrictQuery<RunFilter>,
) -> Result<Json<RunPage>, AppError> {
    let page = state
        .run_list
        .list(&state.db, state.live.changes(), &filter)
        .await?;
    Ok(Json(page))
}

/// `GET /api/v1/runs/{run_id}`.
pub async fn get(
    _: ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
) -> Result<Json<RunDetail>, AppError> {
    Ok(Json(detail(&state, run_id).await?))
}

/// The answer to a cancel.
#[derive(Debug, Serialize)]
pub struct Cancelled {
    /// `cancelled` (it was queued) or `requested` (the worker stops at its
    /// next heartbeat).
    pub outcome: &'static str,
    pub run: RunDetail,
}

/// `POST /api/v1/runs/{run_id}/cancel`: 409 when the run has finished.
pub async fn cancel(
    access: Access<Submit>,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
) -> Result<(StatusCode, Json<Cancelled>), AppError> {
    access.may_change_run(&state.db, run_id).await?;
    let outcome = runs::cancel_run(&state.db, run_id).await?;
    state.live.changes().tick();
    let (status, outcome) = match outcome {
        CancelOutcome::Cancelled => (StatusCode::OK, "cancelled"),
        CancelOutcome::Requested => (StatusCode::ACCEPTED, "requested"),
    };
    let run = detail(&state, run_id).await?;
    Ok((status, Json(Cancelled { outcome, run })))
}

/// `POST /api/v1/runs/{run_id}/retry`: requeue a failed or cancelled run; 409
/// otherwise.
pub async fn retry(
    access: Access<Submit>,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
) -> Result<Json<RunDetail>, AppError> {
    access.may_change_run(&state.db, run_id).await?;
    runs::retry_run(&state.db, run_id).await?;
    state.live.changes().tick();
    Ok(Json(detail(&state, run_id).await?))
}
