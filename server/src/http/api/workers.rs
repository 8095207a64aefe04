//! `GET /api/v1/workers`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::StrictQuery;
use crate::auth::ReadAccess;
use crate::http::{AppError, AppState};
use crate::read_model::workers::{self, WorkerView};

/// Query of `GET /api/v1/workers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerQuery {
    /// Also list workers that exited (default false).
    pub include_stopped: Option<bool>,
}

pub async fn list(
    _: ReadAccess,
    State(state): State<AppState>,
    StrictQuery(q): StrictQuery<WorkerQuery>,
) -> Result<Json<Vec<WorkerView>>, AppError> {
    Ok(Json(
        workers::list(&state.db, q.include_stopped.unwrap_or(false)).await?,
    ))
}
