//! Path parameters, parsed strictly: a run id that is not a UUID or an
//! artifact name outside the schema's alphabet is a 400 naming the parameter,
//! never a plain-text rejection or a query with odd input.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use uuid::Uuid;

use super::extract;
use crate::http::AppError;
use crate::read_model::artifacts::valid_name;

async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>, AppError> {
    Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| AppError::bad_request("", e.body_text()))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, AppError> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("route has no `{name}` parameter")))
}

/// `{run_id}`.
#[derive(Debug, Clone, Copy)]
pub struct RunPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RunPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let p = params(parts, state).await?;
        Ok(Self(extract::run_id(param(&p, "run_id")?)?))
    }
}

/// `{run_id}` and `{name}` of an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactPath(pub Uuid, pub String);

impl<S: Send + Sync> FromRequestParts<S> for ArtifactPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let p = params(parts, state).await?;
        let run_id = extract::run_id(param(&p, "run_id")?)?;
        let name = param(&p, "name")?;
        if !valid_name(name) {
            return Err(AppError::bad_request(
                "name",
                "an artifact name is 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            ));
        }
        Ok(Self(run_id, name.to_string()))
    }
}

/// `{study_id}`.
#[derive(Debug, Clone, Copy)]
pub struct StudyPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for StudyPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let p = params(parts, state).await?;
        let raw = param(&p, "study_id")?;
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| AppError::bad_request("study_id", "is not a UUID"))
    }
}
