//! `GET /api/v1/queue`: queued jobs in claim order with positions, and
//! running jobs with their worker and heartbeat age.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::StrictQuery;
use crate::auth::ReadAccess;
use crate::http::{AppError, AppState};
use crate::read_model::queue::{self, QueueView};

/// Query of `GET /api/v1/queue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Queued jobs shown from the head (1..=10000, default 500).
    pub limit: Option<i64>,
}

pub async fn view(
    _: ReadAccess,
    State(state): State<AppState>,
    StrictQuery(q): StrictQuery<QueueQuery>,
) -> Result<Json<QueueView>, AppError> {
    Ok(Json(queue::view(&state.db, q.limit.unwrap_or(500)).await?))
}
