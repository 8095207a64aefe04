//! The HTTP side: one [`AppState`], one router built by [`app`], modules that
//! each contribute their routes.

pub mod api;
pub mod artifact_body;
mod error;
mod health;
pub mod pages;
pub mod security_headers;
pub mod static_files;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use sqlx::PgPool;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

pub use error::{AppError, ErrorBody};

use crate::settings::ServeSettings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<ServeSettings>,
    /// Live updates fanned out from the one LISTEN connection (`crate::live`).
    pub live: crate::live::Live,
    /// The API's run list, served from memory while no run changed.
    pub run_list: Arc<crate::read_model::run_list_cache::RunListCache>,
    /// Ingest batches' writers: concurrent batches share a commit.
    pub ingest: crate::ingest_writer::IngestWriter,
    /// Where artifact bytes live (metadata is in `db`).
    pub artifacts: maelab_core::artifact_store::ArtifactStore,
}

impl AppState {
    pub fn new(
        db: PgPool,
        settings: ServeSettings,
        artifacts: maelab_core::artifact_store::ArtifactStore,
    ) -> Self {
        Self {
            db,
            artifacts,
            settings: Arc::new(settings),
            live: crate::live::Live::new(),
            run_list: Arc::default(),
            ingest: Default::default(),
        }
    }
}

/// The whole application, without a socket (tests call it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .merge(pages::router())
        .merge(api::router())
        .merge(crate::auth::session::router())
        .merge(static_files::router(state.settings.static_dir.as_deref()))
        .fallback(pages::not_found)
        .layer(CompressionLayer::new());
    // Outside everything but the trace, so errors and 404s carry them too.
    security_headers::add(routes)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
