//! The read side shared by the REST API and the web pages: every query that
//! shows runs, metrics, artifacts, workers and the queue lives here, once, so
//! a page and the API never disagree about what "epochs done" or "best top-1"
//! means.
//!
//! Writes are not here: they go through `maelab_core::db` (runs, queue,
//! metrics), which fences and validates them.

pub mod artifacts;
pub mod metrics;
pub mod points;
pub mod queue;
pub mod run_list_cache;
pub mod runs;
pub mod studies;
pub mod study_results;
pub mod system_samples;
pub mod workers;

pub use runs::{RunDetail, RunFilter, RunPage, RunSort, RunSummary, SortOrder};

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A filter, sort key or cursor the caller gave is not acceptable; names
    /// the parameter so the API can answer 400 with the field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl ReadError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The run statuses the schema knows (the `run_status` enum), for filters.
pub const RUN_STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];
/// The run kinds (`run_kind`).
pub const RUN_KINDS: &[&str] = &["pretrain", "finetune"];
/// The models (`run.model` check).
pub const MODELS: &[&str] = &["mae", "wave_mae"];
