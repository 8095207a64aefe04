//! The REST API under `/api/v1`.
//!
//! Two tables, [`ROUTES`] and [`STUDY_ROUTES`] ([`all_routes`]), list every endpoint with its method, path,
//! parameters and answers; [`router`] mounts exactly that table and
//! [`openapi::document`] describes exactly that table, so the OpenAPI document
//! cannot drift from the handlers (a test also sends every documented route
//! through the router).

pub mod artifacts;
pub mod events;
pub mod extract;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod paths;
pub mod queue;
pub mod runs;
pub mod studies;
pub mod workers;

use axum::Router;
use axum::http::Uri;
use axum::routing::{MethodFilter, MethodRouter, get, on};
use serde_json::{Value, json};

use super::{AppError, AppState};
use crate::read_model::ReadError;

impl From<ReadError> for AppError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Invalid { field, reason } => Self::bad_request(field, reason),
            ReadError::Db(e) => e.into(),
        }
    }
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
}

impl Verb {
    pub fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
        }
    }
}

/// A query parameter as the document describes it.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    pub name: &'static str,
    /// JSON schema of the value.
    pub schema: fn() -> Value,
    pub description: &'static str,
}

/// One endpoint: how it is routed and how it is documented.
pub struct ApiRoute {
    pub verb: Verb,
    /// axum syntax (`{run_id}`), which is also OpenAPI's.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// Needs a token (always), or only when reads are closed.
    pub write: bool,
    pub query: &'static [QueryParam],
    /// JSON schema of the request body, if it takes one.
    pub body: Option<fn() -> Value>,
    /// Success status, media type and JSON schema of the answer.
    pub ok: (u16, &'static str, fn() -> Value),
    /// Error statuses it can answer besides the common ones (401, 400).
    pub errors: &'static [u16],
    /// Builds the handler for the given method.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

fn s_string() -> Value {
    json!({"type": "string"})
}
fn s_int() -> Value {
    json!({"type": "integer", "format": "int32", "minimum": -2147483648_i64, "maximum": 2147483647})
}
fn s_range(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max})
}
fn s_bool() -> Value {
    json!({"type": "boolean"})
}
fn s_enum(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}
fn s_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}
fn s_array_of(name: &str) -> Value {
    json!({"type": "array", "items": s_ref(name)})
}

const RUN_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "status",
        schema: || s_enum(crate::read_model::RUN_STATUSES),
        description: "Only runs with this status.",
    },
    QueryParam {
        name: "model",
        schema: || s_enum(crate::read_model::MODELS),
        description: "Only runs of this model.",
    },
    QueryParam {
        name: "kind",
        schema: || s_enum(crate::read_model::RUN_KINDS),
        description: "Only pretrain or finetune runs.",
    },
    QueryParam {
        name: "tag",
        schema: s_string,
        description: "Only runs carrying this tag.",
    },
    QueryParam {
        name: "q",
        schema: s_string,
        description: "Case-insensitive search in name, preset, tags and id.",
    },
    QueryParam {
        name: "sort",
        schema: || s_enum(crate::read_model::RunSort::ALL),
        description: "Column to sort by (default created_at).",
    },
    QueryParam {
        name: "order",
        schema: || s_enum(&["asc", "desc"]),
        description: "Sort direction (default desc).",
    },
    QueryParam {
        name: "limit",
        schema: || s_range(1, crate::read_model::runs::MAX_LIMIT),
        description: "Rows per page, 1-500 (default 50).",
    },
    QueryParam {
        name: "offset",
        schema: || s_range(0, i64::MAX),
        description: "Rows to skip (default 0).",
    },
];

/// Every endpoint of the API.
pub static ROUTES: &[ApiRoute] = &[
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs",
        operation_id: "createRun",
        summary: "Submit a run: its config as JSON; validated like the worker validates it.",
        write: true,
        query: &[],
        body: Some(|| s_ref("RunConfigInput")),
        ok: (201, "application/json", || s_ref("RunDetail")),
        errors: &[403, 413, 415, 422],
        handler: |m| on(m, runs::create),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs",
        operation_id: "listRuns",
        summary: "List runs with filters, search, sorting and pagination.",
        write: false,
        query: RUN_QUERY,
        body: None,
        ok: (200, "application/json", || s_ref("RunPage")),
        errors: &[],
        handler: |m| on(m, runs::list),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}",
        operation_id: "getRun",
        summary: "One run: status, progress, best top-1, worker, queue position, config.",
        write: false,
        query: &[],
        body: None,
        ok: (200, "application/json", || s_ref("RunDetail")),
        errors: &[404],
        handler: |m| on(m, runs::get),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/{run_id}/cancel",
        operation_id: "cancelRun",
        summary: "Cancel a queued (at once) or running (within a heartbeat) run.",
        write: true,
        query: &[],
        body: None,
        ok: (200, "application/json", || json!({"type": "object"})),
        errors: &[403, 404, 409],
        handler: |m| on(m, runs::cancel),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/{run_id}/retry",
        operation_id: "retryRun",
        summary: "Requeue a failed or cancelled run; it resumes from its last checkpoint.",
        write: true,
        query: &[],
        body: None,
        ok: (200, "application/json", || s_ref("RunDetail")),
        errors: &[403, 404, 409],
        handler: |m| on(m, runs::retry),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/epochs",
        operation_id: "getEpochs",
        summary: "Epoch metrics as JSON, or CSV with format=csv or Accept: text/csv.",
        write: false,
        query: &[
            QueryParam {
                name: "format",
                schema: || s_enum(&["json", "csv"]),
                description: "json (default) or csv.",
            },
            QueryParam {
                name: "after",
                schema: s_int,
                description: "Only epochs after this one.",
            },
        ],
        body: None,
        ok: (200, "application/json", || s_array_of("EpochRow")),
        errors: &[404],
        handler: |m| on(m, metrics::epochs),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/steps",
        operation_id: "getSteps",
        summary: "Sampled training steps, after a step to resume a live chart.",
        write: false,
        query: &[
            QueryParam {
                name: "after",
                schema: s_int,
                description: "Only steps after this one.",
            },
            QueryParam {
                name: "limit",
                schema: || s_range(1, crate::read_model::metrics::MAX_STEPS),
                description: "At most this many rows (1-20000).",
            },
        ],
        body: None,
        ok: (200, "application/json", || s_array_of("StepRow")),
        errors: &[404],
        handler: |m| on(m, metrics::steps),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/events",
        operation_id: "runEvents",
        summary: "Server-sent events: `status` changes and `epoch` rows; resume with Last-Event-ID.",
        write: false,
        query: &[],
        body: None,
        ok: (200, "text/event-stream", || json!({"type": "string"})),
        errors: &[404],
        handler: |m| on(m, events::events),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/artifacts",
        operation_id: "listArtifacts",
        summary: "Reconstructions, checkpoints and log.txt of a run (metadata).",
        write: false,
        query: &[QueryParam {
            name: "kind",
            schema: || s_enum(&["reconstruction", "checkpoint", "log"]),
            description: "Only this kind.",
        }],
        body: None,
        ok: (200, "application/json", || s_array_of("ArtifactInfo")),
        errors: &[404],
        handler: |m| on(m, artifacts::list),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/artifacts/{name}",
        operation_id: "downloadArtifact",
        summary: "Download one artifact; log.txt is generated from the epoch rows (MAE format).",
        write: false,
        query: &[],
        body: None,
        ok: (
            200,
            "application/octet-stream",
            || json!({"type": "string", "format": "binary"}),
        ),
        errors: &[404],
        handler: |m| on(m, artifacts::download),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/workers",
        operation_id: "listWorkers",
        summary: "Worker processes: host, device, GPU, last seen, current job.",
        write: false,
        query: &[QueryParam {
            name: "include_stopped",
            schema: s_bool,
            description: "Also list workers that exited.",
        }],
        body: None,
        ok: (200, "application/json", || s_array_of("Worker")),
        errors: &[],
        handler: |m| on(m, workers::list),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/queue",
        operation_id: "getQueue",
        summary: "Queued jobs in claim order with positions; running jobs with their worker.",
        write: false,
        query: &[QueryParam {
            name: "limit",
            schema: || s_range(1, 10_000),
            description: "Queued jobs shown (1-10000, default 500).",
        }],
        body: None,
        ok: (200, "application/json", || s_ref("Queue")),
        errors: &[],
        handler: |m| on(m, queue::view),
    },
];

const STUDY_PAGE: &[QueryParam] = &[
    QueryParam {
        name: "limit",
        schema: || s_range(1, 500),
        description: "Rows per page, 1-500 (default 50).",
    },
    QueryParam {
        name: "offset",
        schema: || s_range(0, i64::MAX),
        description: "Rows to skip (default 0).",
    },
];

/// The study endpoints (issue 11), mounted and documented like [`ROUTES`].
pub static STUDY_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/studies",
        operation_id: "createStudy",
        summary: "Submit a study: every arm and seed is checked, then all its runs (or its arms' calibrations) are queued in one transaction.",
        write: true,
        query: &[],
        body: Some(|| s_ref("StudySpec")),
        ok: (201, "application/json", || s_ref("StudyDetail")),
        errors: &[403, 413, 415, 422],
        handler: |m| on(m, studies::create),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/studies/preview",
        operation_id: "previewStudy",
        summary: "The runs a study would queue, with their resolved configs; nothing is written.",
        write: false,
        query: &[],
        body: Some(|| s_ref("StudySpec")),
        ok: (200, "application/json", || s_ref("StudyPreview")),
        errors: &[413, 415, 422],
        handler: |m| on(m, studies::preview_handler),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/studies",
        operation_id: "listStudies",
        summary: "Studies, newest first, with the progress of their chains.",
        write: false,
        query: STUDY_PAGE,
        body: None,
        ok: (200, "application/json", || s_array_of("StudySummary")),
        errors: &[],
        handler: |m| on(m, studies::list),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/studies/{study_id}",
        operation_id: "getStudy",
        summary: "One study: chains, calibration, and the results with intervals.",
        write: false,
        query: &[],
        body: None,
        ok: (200, "application/json", || s_ref("StudyDetail")),
        errors: &[404],
        handler: |m| on(m, studies::get),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/studies/{study_id}/cancel",
        operation_id: "cancelStudy",
        summary: "Cancel a study: queued jobs at once, running ones within a heartbeat; nothing new is queued.",
        write: true,
        query: &[],
        body: None,
        ok: (200, "application/json", || s_ref("StudyCancelled")),
        errors: &[403, 404],
        handler: |m| on(m, studies::cancel),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/studies/{study_id}/retry",
        operation_id: "retryStudy",
        summary: "Requeue the failed or cancelled work of a study, or of one chain (arm and seed).",
        write: true,
        query: &[
            QueryParam {
                name: "arm",
                schema: s_string,
                description: "Only this arm's chain (with seed).",
            },
            QueryParam {
                name: "seed",
                schema: || s_range(0, i64::MAX),
                description: "Only this seed's chain (with arm).",
            },
        ],
        body: None,
        ok: (200, "application/json", || s_ref("StudyRetried")),
        errors: &[403, 404, 409, 422],
        handler: |m| on(m, studies::retry),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/studies/{study_id}/export",
        operation_id: "exportStudy",
        summary: "Per-seed (rows=seeds) or aggregate (rows=aggregate) rows as JSON or CSV.",
        write: false,
        query: &[
            QueryParam {
                name: "format",
                schema: || s_enum(&["json", "csv"]),
                description: "json (default) or csv.",
            },
            QueryParam {
                name: "rows",
                schema: || s_enum(&["seeds", "aggregate"]),
                description: "seeds (default) or aggregate.",
            },
        ],
        body: None,
        ok: (
            200,
            "application/json",
            || json!({"type": "array", "items": {"type": "object"}}),
        ),
        errors: &[404],
        handler: |m| on(m, studies::export),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/studies/{study_id}/curves",
        operation_id: "studyCurves",
        summary: "Per arm, stage, metric and epoch: mean and min-max band over seeds.",
        write: false,
        query: &[],
        body: None,
        ok: (
            200,
            "application/json",
            || json!({"type": "array", "items": {"type": "object"}}),
        ),
        errors: &[404],
        handler: |m| on(m, studies::curves),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/studies/{study_id}/events",
        operation_id: "studyEvents",
        summary: "Server-sent events: `progress` with the study and every chain, at once and after each change.",
        write: false,
        query: &[],
        body: None,
        ok: (200, "text/event-stream", || json!({"type": "string"})),
        errors: &[404],
        handler: |m| on(m, studies::events),
    },
];

/// Runs trained anywhere (issue 12, docs/ingest.md).
pub static INGEST_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/external",
        operation_id: "createExternalRun",
        summary: "Create a run that no worker trains; idempotent per token with client_run_id (201 new, 200 found).",
        write: true,
        query: &[],
        body: Some(|| s_ref("ExternalRunInput")),
        ok: (201, "application/json", || s_ref("RunDetail")),
        errors: &[403, 413, 415, 422],
        handler: |m| on(m, ingest::create),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/external",
        operation_id: "findExternalRun",
        summary: "The run this token created with client_run_id (404 when none); creates nothing.",
        write: true,
        query: &[QueryParam {
            name: "client_run_id",
            schema: || json!({"type": "string", "minLength": 1, "maxLength": 200}),
            description: "The id given when the run was created (required).",
        }],
        body: None,
        ok: (200, "application/json", || s_ref("RunDetail")),
        errors: &[404, 422],
        handler: |m| on(m, ingest::find),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/{run_id}/metrics",
        operation_id: "logMetrics",
        summary: "A batch of 1-1000 points {key, step, value, wall_time?}, upserted on (run, key, step) in one transaction.",
        write: true,
        query: &[],
        body: Some(|| s_ref("MetricBatch")),
        ok: (
            200,
            "application/json",
            || json!({"type": "object", "properties": {"accepted": {"type": "integer"}}}),
        ),
        errors: &[403, 404, 409, 413, 415, 422],
        handler: |m| on(m, ingest::metrics),
    },
    ApiRoute {
        verb: Verb::Get,
        path: "/api/v1/runs/{run_id}/metrics",
        operation_id: "getMetrics",
        summary: "The run's metric keys (grouped by prefix), or with key=K that key's points by step.",
        write: false,
        query: &[
            QueryParam {
                name: "key",
                schema: || json!({"type": "string", "minLength": 1, "maxLength": 250}),
                description: "The key whose history to read; none lists the keys.",
            },
            QueryParam {
                name: "after",
                schema: || s_range(-1, i64::MAX),
                description: "Only steps after this one.",
            },
            QueryParam {
                name: "limit",
                schema: || s_range(1, 100_000),
                description: "At most this many points (default and most 100000).",
            },
        ],
        body: None,
        ok: (
            200,
            "application/json",
            || json!({"type": "array", "items": {"type": "object"}}),
        ),
        errors: &[404],
        handler: |m| on(m, ingest::points),
    },
    ApiRoute {
        verb: Verb::Put,
        path: "/api/v1/runs/{run_id}/artifacts/{name}",
        operation_id: "uploadArtifact",
        summary: "Upload an artifact (streamed body, stored only when its sha256 matches); reconstructions show on the run page.",
        write: true,
        query: &[
            QueryParam {
                name: "sha256",
                schema: || json!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
                description: "Hex sha256 of the body (required).",
            },
            QueryParam {
                name: "kind",
                schema: || s_enum(&["reconstruction", "checkpoint", "log", "file"]),
                description: "What it is (default file).",
            },
            QueryParam {
                name: "epoch",
                schema: || s_range(0, 2_147_483_647),
                description: "The epoch it belongs to.",
            },
        ],
        body: None,
        ok: (201, "application/json", || s_ref("ArtifactInfo")),
        errors: &[403, 404, 409, 413, 422],
        handler: |m| on(m, ingest::upload),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/{run_id}/heartbeat",
        operation_id: "heartbeatRun",
        summary: "An external run is alive (a lost one runs again).",
        write: true,
        query: &[],
        body: None,
        ok: (200, "application/json", || json!({"type": "object"})),
        errors: &[403, 404, 409],
        handler: |m| on(m, ingest::heartbeat),
    },
    ApiRoute {
        verb: Verb::Post,
        path: "/api/v1/runs/{run_id}/finish",
        operation_id: "finishRun",
        summary: "End an external run: succeeded, or failed with a reason. The same finish again is harmless.",
        write: true,
        query: &[],
        body: Some(|| s_ref("FinishRun")),
        ok: (200, "application/json", || s_ref("RunDetail")),
        errors: &[403, 404, 409, 415, 422],
        handler: |m| on(m, ingest::finish),
    },
];

/// Every documented endpoint: runs and the rest, then studies, then ingest.
pub fn all_routes() -> impl Iterator<Item = &'static ApiRoute> {
    ROUTES
        .iter()
        .chain(STUDY_ROUTES.iter())
        .chain(INGEST_ROUTES.iter())
}

/// Answer for any other path under `/api/v1`: a JSON 404, not an empty page.
async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(format!("no API endpoint at {}", uri.path()))
}

/// The API's routes, to be merged into [`crate::http::app`].
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for route in all_routes() {
        router = router.route(route.path, (route.handler)(route.verb.filter()));
    }
    router
        .route(openapi::PATH, get(openapi::serve))
        .route("/api/v1/{*rest}", get(not_found).post(not_found))
}
