//! Epoch metrics (JSON or CSV) and step metrics of a run.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::StrictQuery;
use super::paths::RunPath;
use crate::auth::ReadAccess;
use crate::http::{AppError, AppState};
use crate::read_model::metrics::{self, StepRow};
use crate::read_model::runs::run_exists;

/// `json` (default) or `csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// Query of `GET …/epochs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochQuery {
    /// `json` or `csv`; an `Accept: text/csv` header also selects CSV.
    pub format: Option<Format>,
    /// Only epochs after this one.
    pub after: Option<i32>,
}

/// Query of `GET …/steps`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepQuery {
    /// Only steps after this one (resume a live chart).
    pub after: Option<i32>,
    /// At most this many rows (1..=20000).
    pub limit: Option<i64>,
}

async fn existing(state: &AppState, run_id: uuid::Uuid) -> Result<(), AppError> {
    if run_exists(&state.db, run_id).await? {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("run {run_id}")))
    }
}

/// `GET /api/v1/runs/{run_id}/epochs`.
pub async fn epochs(
    _: ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<EpochQuery>,
) -> Result<Response, AppError> {
    let rows = metrics::epochs(&state.db, run_id, q.after).await?;
    // Only an empty answer needs the second query that tells "no epochs
    // yet" from "no such run".
    if rows.is_empty() {
        existing(&state, run_id).await?;
    }
    let wants_csv = q.format == Some(Format::Csv)
        || (q.format.is_none()
            && headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/csv")));
    if wants_csv {
        let disposition = format!("attachment; filename=\"{run_id}-epochs.csv\"");
        return Ok((
            [
                (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (CONTENT_DISPOSITION, disposition),
            ],
            metrics::epochs_csv(&rows),
        )
            .into_response());
    }
    Ok(Json(rows).into_response())
}

/// `GET /api/v1/runs/{run_id}/steps`.
pub async fn steps(
    _: ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    StrictQuery(q): StrictQuery<StepQuery>,
) -> Result<Json<Vec<StepRow>>, AppError> {
    existing(&state, run_id).await?;
    Ok(Json(
        metrics::steps(&state.db, run_id, q.after, q.limit).await?,
    ))
}
