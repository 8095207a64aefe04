//! `/api/v1/studies`: submit (the study document as JSON, expanded and
//! checked by `maelab_core::study`), preview (the runs it would queue, nothing
//! written), list, get with the aggregates, cancel, retry (the whole study or
//! one chain), export (per-seed and aggregate rows as CSV or JSON) and a live
//! stream. Writes go through `maelab_core::db::studies`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use maelab_core::db::studies::{self, StudyError};
use maelab_core::study::{ExpandedStudy, StudySpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use uuid::Uuid;

use super::extract::{self, StrictQuery};
use super::paths::StudyPath;
use crate::auth::{Access, ReadAccess, Submit};
use crate::http::{AppError, AppState};
use crate::live::LiveEvent;
use crate::read_model::studies::{
    self as read, ArmRow, CalibrationRow, ChainRow, CurvePoint, StudySummary,
};
use crate::read_model::study_results::{self, StudyResults};

impl From<StudyError> for AppError {
    fn from(e: StudyError) -> Self {
        match e {
            StudyError::Invalid(errors) => Self::Invalid(errors),
            StudyError::NotFound(id) => Self::NotFound(format!("study {id}")),
            StudyError::Conflict(m) => Self::Conflict(m),
            StudyError::Queue(q) => Self::Internal(q.into()),
            StudyError::Db(e) => e.into(),
        }
    }
}

/// Parse and expand a submitted JSON document: 400 when it is not JSON, 422
/// naming the field on any other error.
pub fn expand(body: &[u8], max_runs: usize) -> Result<ExpandedStudy, AppError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| AppError::bad_request("", format!("malformed JSON: {e}")))?;
    let text = std::str::from_utf8(body)
        .map_err(|_| AppError::bad_request("", "the body is not UTF-8"))?;
    let spec =
        StudySpec::from_json_str(text).map_err(|e| AppError::Invalid(extract::with_fields(e)))?;
    spec.expand(max_runs).map_err(AppError::Invalid)
}

/// Read a request's JSON body and expand it.
async fn expand_body(req: Request, state: &AppState) -> Result<ExpandedStudy, AppError> {
    let body = extract::json_bytes(req, state.settings.body_limit).await?;
    expand(&body, state.settings.max_study_runs)
}

/// One run a study would queue.
#[derive(Debug, Serialize)]
pub struct PreviewRun {
    pub arm: String,
    pub seed: u64,
    pub kind: &'static str,
    pub name: String,
    pub model: &'static str,
    /// None: set by calibration (a seconds budget).
    pub epochs: Option<u32>,
    /// None: scaled to the calibrated epochs (nobody set it).
    pub warmup_epochs: Option<f64>,
    /// Queued at once, or when its pretrain succeeds.
    pub queued: &'static str,
    pub config: Value,
}

/// What a study would queue.
#[derive(Debug, Serialize)]
pub struct Preview {
    pub name: String,
    pub stages: &'static str,
    pub baseline: String,
    pub budget: Value,
    pub arms: Vec<String>,
    pub seeds: Vec<u64>,
    pub runs: usize,
    pub calibrations: usize,
    pub chains: Vec<PreviewRun>,
}

/// Whether the document sets `warmup_epochs` for `arm` (then calibration
/// keeps it; otherwise it scales with the calibrated epochs).
fn warmup_set(study: &ExpandedStudy, arm: &str) -> bool {
    let key = "warmup_epochs";
    study.spec.base.contains_key(key)
        || study
            .spec
            .finetune
            .as_ref()
            .is_some_and(|f| f.contains_key(key))
        || study
            .arm(arm)
            .is_some_and(|a| a.overrides.contains_key(key))
}

/// The runs `study` would queue, in order.
pub fn preview(study: &ExpandedStudy) -> Preview {
    let seconds = study.budget.is_seconds();
    let mut chains = Vec::new();
    for chain in &study.chains {
        for (config, first) in [
            (&chain.pretrain, true),
            (&chain.finetune, chain.pretrain.is_none()),
        ] {
            let Some(c) = config else { continue };
            chains.push(PreviewRun {
                arm: chain.arm.clone(),
                seed: chain.seed,
                kind: c.kind.as_str(),
                name: c.name.clone(),
                model: c.model.as_str(),
                epochs: (!seconds).then_some(c.epochs),
                warmup_epochs: (!seconds || warmup_set(study, &chain.arm))
                    .then_some(c.warmup_epochs),
                queued: match (first, seconds) {
                    (true, false) => "at submit",
                    (true, true) => "after its arm's calibration",
                    (false, _) => "when its pretrain succeeds",
                },
                config: serde_json::to_value(c).unwrap_or_default(),
            });
        }
    }
    Preview {
        name: study.spec.name.clone(),
        stages: study.stages.as_str(),
        baseline: study.baseline.clone(),
        budget: serde_json::to_value(study.budget).unwrap_or_default(),
        arms: study.arms.iter().map(|a| a.name.clone()).collect(),
        seeds: study.seeds.clone(),
        runs: study.run_count(),
        calibrations: if seconds { study.arms.len() } else { 0 },
        chains,
    }
}

/// `POST /api/v1/studies/preview`: what a submit would queue; writes nothing.
pub async fn preview_handler(
    _: ReadAccess,
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Preview>, AppError> {
    let study = expand_body(req, &state).await?;
    Ok(Json(preview(&study)))
}

/// A study with everything its page shows.
#[derive(Debug, Serialize)]
pub struct StudyDetail {
    #[serde(flatten)]
    pub summary: StudySummary,
    pub spec: Value,
    pub budget: Value,
    pub arms: Vec<ArmRow>,
    pub calibration: Vec<CalibrationRow>,
    pub chains: Vec<ChainRow>,
    pub results: StudyResults,
}

/// Read a study's detail, or 404.
pub async fn detail(state: &AppState, study_id: Uuid) -> Result<StudyDetail, AppError> {
    let db = &state.db;
    let summary = read::summary(db, study_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("study {study_id}")))?;
    let doc = read::doc(db, study_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("study {study_id}")))?;
    let arms = read::arms(db, study_id).await?;
    let calibration = read::calibrations(db, study_id).await?;
    let chains = read::chains(db, study_id).await?;
    let order: Vec<String> = arms.iter().map(|a| a.arm.clone()).collect();
    let results = study_results::aggregate(&chains, &order, &summary.baseline_arm);
    Ok(StudyDetail {
        summary,
        spec: doc.spec,
        budget: doc.budget,
        arms,
        calibration,
        chains,
        results,
    })
}

/// `POST /api/v1/studies`: 201 with the study and its `Location`.
pub async fn create(
    Access { token, .. }: Access<Submit>,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, AppError> {
    let study = expand_body(req, &state).await?;
    let created = studies::create_study(&state.db, &study, Some(&token.name)).await?;
    state.live.changes().tick();
    let body = detail(&state, created.study_id).await?;
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/studies/{}", created.study_id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// Paging of the study list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// `GET /api/v1/studies`: newest first.
pub async fn list(
    _: ReadAccess,
    State(state): State<AppState>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> Result<Json<Vec<StudySummary>>, AppError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(AppError::bad_request("limit", "must be 1 to 500"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(AppError::bad_request("offset", "must not be negative"));
    }
    Ok(Json(read::list(&state.db, limit, offset).await?))
}

/// `GET /api/v1/studies/{study_id}`.
pub async fn get(
    _: ReadAccess,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
) -> Result<Json<StudyDetail>, AppError> {
    Ok(Json(detail(&state, study_id).await?))
}

/// The answer to a cancel.
#[derive(Debug, Serialize)]
pub struct Cancelled {
    /// Queued jobs cancelled at once.
    pub cancelled: u64,
    /// Running jobs told to stop at their next heartbeat.
    pub requested: u64,
}

/// `POST /api/v1/studies/{study_id}/cancel`.
pub async fn cancel(
    access: Access<Submit>,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
) -> Result<Json<Cancelled>, AppError> {
    access.may_change_study(&state.db, study_id).await?;
    let done = studies::cancel_study(&state.db, study_id).await?;
    state.live.changes().tick();
    Ok(Json(Cancelled {
        cancelled: done.cancelled,
        requested: done.requested,
    }))
}

/// Which chain to retry; neither: the whole study.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryQuery {
    #[serde(default)]
    pub arm: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The answer to a retry.
#[derive(Debug, Serialize)]
pub struct Retried {
    pub runs: u64,
    pub finetunes: u64,
    pub calibrations: u64,
}

/// `POST /api/v1/studies/{study_id}/retry[?arm=A&seed=S]`.
pub async fn retry(
    access: Access<Submit>,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
    StrictQuery(q): StrictQuery<RetryQuery>,
) -> Result<Json<Retried>, AppError> {
    access.may_change_study(&state.db, study_id).await?;
    let chain = match (&q.arm, q.seed) {
        (Some(arm), Some(seed)) => Some((arm.as_str(), seed)),
        (None, None) => None,
        (Some(_), None) => return Err(AppError::bad_request("seed", "is needed with arm")),
        (None, Some(_)) => return Err(AppError::bad_request("arm", "is needed with seed")),
    };
    let done = studies::retry_study(&state.db, study_id, chain).await?;
    state.live.changes().tick();
    Ok(Json(Retried {
        runs: done.runs,
        finetunes: done.finetunes,
        calibrations: done.calibrations,
    }))
}

/// How to export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    pub format: Option<String>,
    /// `seeds` (one row per chain and metric) or `aggregate` (one per arm and metric).
    #[serde(default)]
    pub rows: Option<String>,
}

/// One per-seed row of the export.
#[derive(Debug, Serialize)]
pub struct SeedRow {
    pub arm: String,
    pub seed: i64,
    pub status: String,
    pub pretrain_run: Option<Uuid>,
    pub finetune_run: Option<Uuid>,
    pub metric: &'static str,
    pub value: f64,
}

/// One aggregate row of the export.
#[derive(Debug, Serialize)]
pub struct AggregateRow {
    pub arm: String,
    pub metric: &'static str,
    pub n: usize,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub baseline: String,
    pub diff: Option<f64>,
    pub diff_ci_low: Option<f64>,
    pub diff_ci_high: Option<f64>,
    pub welch_p: Option<f64>,
    pub prob_improvement: Option<f64>,
}

/// Per-seed rows of `detail`.
pub fn seed_rows(detail: &StudyDetail) -> Vec<SeedRow> {
    detail
        .chains
        .iter()
        .flat_map(|c| {
            c.values.iter().map(move |(metric, value)| SeedRow {
                arm: c.arm.clone(),
                seed: c.seed,
                status: c.status.clone(),
                pretrain_run: c.pretrain.as_ref().map(|r| r.run_id),
                finetune_run: c.finetune.as_ref().map(|r| r.run_id),
                metric,
                value: *value,
            })
        })
        .collect()
}

/// Aggregate rows of `detail`.
pub fn aggregate_rows(detail: &StudyDetail) -> Vec<AggregateRow> {
    let baseline = detail.results.baseline.clone();
    detail
        .results
        .arms
        .iter()
        .flat_map(|a| {
            let baseline = baseline.clone();
            a.metrics.iter().map(move |m| {
                let c = m.vs_baseline.as_ref();
                AggregateRow {
                    arm: a.arm.clone(),
                    metric: m.metric,
                    n: m.summary.n,
                    mean: m.summary.mean,
                    sd: m.summary.sd,
                    ci_low: m.summary.ci_low,
                    ci_high: m.summary.ci_high,
                    baseline: baseline.clone(),
                    diff: c.map(|c| c.diff),
                    diff_ci_low: c.map(|c| c.ci_low),
                    diff_ci_high: c.map(|c| c.ci_high),
                    welch_p: c.and_then(|c| c.p_value),
                    prob_improvement: c.map(|c| c.prob_improvement),
                }
            })
        })
        .collect()
}

/// `GET /api/v1/studies/{study_id}/export?format=csv|json&rows=seeds|aggregate`.
pub async fn export(
    _: ReadAccess,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
    StrictQuery(q): StrictQuery<ExportQuery>,
) -> Result<Response, AppError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(AppError::bad_request(
                "format",
                format!("`{other}` is not json or csv"),
            ));
        }
    };
    let aggregate = match q.rows.as_deref() {
        None | Some("seeds") => false,
        Some("aggregate") => true,
        Some(other) => {
            return Err(AppError::bad_request(
                "rows",
                format!("`{other}` is not seeds or aggregate"),
            ));
        }
    };
    let d = detail(&state, study_id).await?;
    if !csv {
        return Ok(if aggregate {
            Json(aggregate_rows(&d)).into_response()
        } else {
            Json(seed_rows(&d)).into_response()
        });
    }
    let text = if aggregate {
        to_csv(&aggregate_rows(&d))
    } else {
        to_csv(&seed_rows(&d))
    }
    .map_err(|e| AppError::Internal(anyhow::anyhow!("csv: {e}")))?;
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let file = format!(
        "attachment; filename=\"study-{study_id}-{}.csv\"",
        if aggregate { "aggregate" } else { "seeds" }
    );
    if let Ok(v) = HeaderValue::from_str(&file) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Rows as CSV: the header from the first row's fields in their declared
/// order (arm, metric, n, mean, ... as a reader expects, not alphabetical),
/// values plain.
pub fn to_csv<T: Serialize>(rows: &[T]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    let mut header: Option<Vec<String>> = None;
    for row in rows {
        // serde_json::Value sorts an object's keys; the text keeps the
        // struct's order, and FieldsInOrder reads it back as it is.
        let FieldsInOrder(fields) = serde_json::from_str(&serde_json::to_string(row)?)?;
        let keys = header.get_or_insert_with(|| {
            let keys: Vec<String> = fields.iter().map(|(k, _)| k.clone()).collect();
            out.push_str(&keys.join(","));
            out.push('\n');
            keys
        });
        let cells: Vec<String> = keys
            .iter()
            .map(
                |k| match fields.iter().find(|(name, _)| name == k).map(|(_, v)| v) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => csv_cell(s),
                    Some(v) => v.to_string(),
                },
            )
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// A JSON object's fields in the order they were written.
struct FieldsInOrder(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for FieldsInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = FieldsInOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FieldsInOrder, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(FieldsInOrder(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `GET /api/v1/studies/{study_id}/curves`: per arm, stage, metric and epoch,
/// the mean and the band over seeds.
pub async fn curves(
    _: ReadAccess,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
) -> Result<Json<Vec<CurvePoint>>, AppError> {
    if read::summary(&state.db, study_id).await?.is_none() {
        return Err(AppError::NotFound(format!("study {study_id}")));
    }
    Ok(Json(read::curves(&state.db, study_id).await?))
}

/// Debounce of the study stream: a burst of run changes is one progress event.
const STREAM_DEBOUNCE: Duration = Duration::from_millis(150);

/// `GET /api/v1/studies/{study_id}/events`: server-sent events. `progress`
/// carries the study's row and every chain's state, sent at once and after
/// every change of one of its runs, epochs or calibrations. A client that
/// waits for the study stops when `active` is 0 and the status is settled.
pub async fn events(
    _: ReadAccess,
    State(state): State<AppState>,
    StudyPath(study_id): StudyPath,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, AppError> {
    // Subscribe before the first read, so no change falls between the two.
    let rx = state.live.subscribe();
    let first = progress(&state, study_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("study {study_id}")))?;
    let runs: HashSet<Uuid> = first.chains.iter().flat_map(chain_runs).collect();
    let stream = futures::stream::unfold(
        (state, rx, runs, Some(first)),
        move |(state, mut rx, mut runs, pending)| async move {
            if let Some(p) = pending {
                let ev = Event::default().event("progress").json_data(&p).ok()?;
                return Some((Ok(ev), (state, rx, runs, None)));
            }
            loop {
                let relevant = match rx.recv().await {
                    Ok(LiveEvent::Run(row)) => {
                        runs.contains(&row.run_id)
                            || read::study_of_run(&state.db, row.run_id)
                                .await
                                .ok()
                                .flatten()
                                == Some(study_id)
                    }
                    Ok(LiveEvent::Epoch(row)) => runs.contains(&row.run_id),
                    Ok(LiveEvent::StudyChanged(id)) => id == study_id,
                    Ok(LiveEvent::Resync) | Err(RecvError::Lagged(_)) => true,
                    Ok(_) => false,
                    Err(RecvError::Closed) => return None,
                };
                if !relevant {
                    continue;
                }
                // Let the rest of a burst (a run's status and its epoch) land.
                tokio::time::sleep(STREAM_DEBOUNCE).await;
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = rx.try_recv() {}
                let p = match progress(&state, study_id).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return None,
                    Err(_) => continue,
                };
                runs.extend(p.chains.iter().flat_map(chain_runs));
                let ev = Event::default().event("progress").json_data(&p).ok()?;
                return Some((Ok(ev), (state, rx, runs, None)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn chain_runs(c: &ChainRow) -> Vec<Uuid> {
    [&c.pretrain, &c.finetune]
        .into_iter()
        .flatten()
        .map(|r| r.run_id)
        .collect()
}

/// What the study stream sends.
#[derive(Debug, Serialize)]
pub struct Progress {
    #[serde(flatten)]
    pub summary: StudySummary,
    pub chains: Vec<ChainRow>,
}

async fn progress(state: &AppState, study_id: Uuid) -> Result<Option<Progress>, AppError> {
    let Some(summary) = read::summary(&state.db, study_id).await? else {
        return Ok(None);
    };
    let chains = read::chains(&state.db, study_id).await?;
    Ok(Some(Progress { summary, chains }))
}
