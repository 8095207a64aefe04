//! The studies table: newest first, each with its status, arms and the
//! progress of its chains, read through `read_model::studies` like the API's
//! `GET /api/v1/studies`.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::{PageError, Reader, render};
use crate::http::AppState;
use crate::read_model::studies::{self as read, StudySummary};

/// Rows the table shows (the API pages through the rest).
pub const LIST_SIZE: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/studies", get(list))
}

#[derive(Template)]
#[template(path = "studies.html")]
struct StudiesPage {
    studies: Vec<StudySummary>,
    limit: i64,
    /// There may be more than the table shows.
    truncated: bool,
}

async fn list(_: Reader, State(state): State<AppState>) -> Result<Response, PageError> {
    let studies = read::list(&state.db, LIST_SIZE, 0).await?;
    render(&StudiesPage {
        truncated: i64::try_from(studies.len()).unwrap_or(i64::MAX) >= LIST_SIZE,
        studies,
        limit: LIST_SIZE,
    })
}
