//! Artifacts of a run: the list (metadata only) and downloads (stored bytes,
//! or `log.txt` generated from the epoch rows in the MAE format).

use axum::Json;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::extract::StrictQuery;
use super::paths::{ArtifactPath, RunPath};
use crate::auth::ReadAccess;
use crate::http::security_headers::{artifact_content_type, artifact_disposition};
use crate::http::{AppError, AppState, artifact_body};
use crate::read_model::artifacts::{self, ArtifactInfo};
use crate::read_model::runs::run_exists;

/// Query of `GET …/artifacts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    /// `reconstruction`, `checkpoint` or `log`.
    pub kind: Option<String>,
}

/// `GET /api/v1/runs/{run_id}/artifacts`.
pub async fn list(
    _: ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    StrictQuery(q): StrictQuery<ArtifactQuery>,
) -> Result<Json<Vec<ArtifactInfo>>, AppError> {
    if !run_exists(&state.db, run_id).await? {
        return Err(AppError::NotFound(format!("run {run_id}")));
    }
    Ok(Json(
        artifacts::list(&state.db, run_id, q.kind.as_deref()).await?,
    ))
}

/// `GET /api/v1/runs/{run_id}/artifacts/{name}`: the bytes with the stored
/// media type (never sniffed: `nosniff` is on every response), images inline
/// and anything else as an attachment, and the sha256 as ETag.
/// Streamed from the store, with `Range` and `HEAD` (see
/// [`crate::http::artifact_body`]).
pub async fn download(
    _: ReadAccess,
    State(state): State<AppState>,
    ArtifactPath(run_id, name): ArtifactPath,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let file = artifacts::fetch(&state.db, run_id, &name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("artifact {name} of run {run_id}")))?;
    let media_type = file.info.media_type.clone();
    let etag = file.info.sha256.as_ref().map(|sha| format!("\"{sha}\""));
    let mut response = artifact_body::respond(&state.artifacts, file, &method, &headers).await?;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, artifact_content_type(&media_type));
    h.insert(
        CONTENT_DISPOSITION,
        artifact_disposition(&media_type, &name),
    );
    if let Some(v) = etag.and_then(|e| e.parse().ok()) {
        h.insert(ETAG, v);
    }
    Ok(response)
}
