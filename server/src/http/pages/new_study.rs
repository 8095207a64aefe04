//! The new-study form: the study document as TOML (the same file `maelab
//! study submit` takes), a preview of every run it would queue (nothing
//! written), and submit. Checks and expansion are `maelab_core::study`'s, the
//! preview rows the API's, so the form, the API and the CLI refuse and queue
//! alike; a refused document comes back as typed, with each field's reason.

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maelab_core::ConfigErrors;
use maelab_core::db::studies::{self, StudyError};
use maelab_core::study::{ExpandedStudy, StudySpec};
use serde::Deserialize;

use super::{PageError, PageQuery, Reader, csrf_value};
use crate::auth::{CsrfForm, Submit};
use crate::http::api::studies::{Preview, preview};
use crate::http::{AppError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/studies/new", get(show).post(submit))
        .route("/studies/new/preview", post(show_preview))
}

/// What the form starts with: two arms, two seeds, two short epochs.
pub const EXAMPLE: &str = r#"# A study: arms (named overrides of `base`) x seeds, each chain a pretraining
# run and the finetune queued from its last checkpoint, at equal budgets.
name = "mae vs wave-mae (small)"
seeds = 2                 # or a list: [0, 7, 9]
baseline = "mae"

[base]
preset = "vit-micro/4"
dataset = "cifar10"
train_subset = 5000
test_subset = 1000

[finetune]               # what the finetune stage changes
lr = 1e-3

[budget]                 # epochs, or pretrain_seconds / finetune_seconds
epochs = 2

[arms.mae]
model = "mae"

[arms.wave-both]
model = "wave_mae"
wave_in = "both"
"#;

/// The repository's Wave-MAE study (`?from=docs`).
pub const WAVE_MAE_DOC: &str = include_str!("../../../../docs/studies/wave-mae.toml");

/// One refused field.
pub struct FieldError {
    /// Dotted path (`arms.wave-both.wave_in`), or `document` for the whole.
    pub field: String,
    pub reason: String,
}

/// One run of the preview as the table prints it.
pub struct PreviewLine {
    pub arm: String,
    pub seed: u64,
    pub stage: &'static str,
    pub model: &'static str,
    /// A number, or `calibrated` (a seconds budget).
    pub epochs: String,
    pub warmup: String,
    pub queued: &'static str,
}

/// The preview's head and rows.
pub struct PreviewView {
    pub name: String,
    pub stages: &'static str,
    pub baseline: String,
    pub arms: Vec<String>,
    pub seeds: String,
    pub runs: usize,
    pub chains: usize,
    pub calibrations: usize,
    pub lines: Vec<PreviewLine>,
}

impl PreviewView {
    fn of(p: Preview, chains: usize) -> Self {
        let lines = p
            .chains
            .into_iter()
            .map(|r| PreviewLine {
                arm: r.arm,
                seed: r.seed,
                stage: r.kind,
                model: r.model,
                epochs: r
                    .epochs
                    .map_or_else(|| "calibrated".to_string(), |e| e.to_string()),
                warmup: r
                    .warmup_epochs
                    .map_or_else(|| "scaled".to_string(), |w| format!("{w}")),
                queued: r.queued,
            })
            .collect();
        Self {
            name: p.name,
            stages: p.stages,
            baseline: p.baseline,
            arms: p.arms,
            seeds: p
                .seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            runs: p.runs,
            chains,
            calibrations: p.calibrations,
            lines,
        }
    }
}

#[derive(Template)]
#[template(path = "new_study.html")]
struct NewStudyPage {
    document: String,
    errors: Vec<FieldError>,
    preview: Option<PreviewView>,
    max_runs: usize,
    /// Repeated in the form's hidden `csrf_token` field.
    csrf: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct NewQuery {
    /// `docs`: start from docs/studies/wave-mae.toml.
    from: Option<String>,
}

/// The posted form: the document (other fields, the CSRF value among
/// them, are ignored).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct StudyForm {
    document: String,
}

fn page(
    state: &AppState,
    headers: &HeaderMap,
    document: String,
    errors: Vec<FieldError>,
    preview: Option<PreviewView>,
) -> NewStudyPage {
    NewStudyPage {
        document,
        errors,
        preview,
        max_runs: state.settings.max_study_runs,
        csrf: csrf_value(headers),
    }
}

/// Parse and check the document: the expanded study, or every error found.
fn check(document: &str, max_runs: usize) -> Result<ExpandedStudy, Vec<FieldError>> {
    StudySpec::from_toml_str(document)
        .and_then(|spec| spec.expand(max_runs))
        .map_err(field_errors)
}

fn field_errors(errors: ConfigErrors) -> Vec<FieldError> {
    errors
        .0
        .into_iter()
        .map(|e| FieldError {
            field: if e.field.is_empty() {
                "document".to_string()
            } else {
                e.field
            },
            reason: e.reason,
        })
        .collect()
}

fn refused(page: &NewStudyPage) -> Result<Response, PageError> {
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page.render()?)).into_response())
}

/// The form with an example (or the repository's Wave-MAE study).
async fn show(
    _: Reader,
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NewQuery>,
) -> Result<Response, PageError> {
    let document = match q.from.as_deref() {
        Some("docs") => WAVE_MAE_DOC,
        _ => EXAMPLE,
    };
    let page = page(&state, &headers, document.to_string(), Vec::new(), None);
    Ok(Html(page.render()?).into_response())
}

/// "Preview": the runs the document would queue, or its errors. Writes
/// nothing, so it needs no sign-in (reads may, on a closed server).
async fn show_preview(
    _: Reader,
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<StudyForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|e| match e.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => PageError::UnsupportedMediaType(e.body_text()),
        StatusCode::PAYLOAD_TOO_LARGE => PageError::TooLarge(e.body_text()),
        _ => PageError::BadRequest(e.body_text()),
    })?;
    match check(&form.document, state.settings.max_study_runs) {
        Ok(study) => {
            let view = PreviewView::of(preview(&study), study.chains.len());
            let page = page(&state, &headers, form.document, Vec::new(), Some(view));
            Ok(Html(page.render()?).into_response())
        }
        Err(errors) => refused(&page(&state, &headers, form.document, errors, None)),
    }
}

/// "Submit": check, store and queue the study in one transaction, then open
/// its page; a refused document comes back with its errors, nothing stored.
async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    post: Result<CsrfForm<StudyForm, Submit>, AppError>,
) -> Result<Response, PageError> {
    let CsrfForm { token, form, .. } = post?;
    let study = match check(&form.document, state.settings.max_study_runs) {
        Ok(study) => study,
        Err(errors) => return refused(&page(&state, &headers, form.document, errors, None)),
    };
    match studies::create_study(&state.db, &study, Some(&token.name)).await {
        Ok(created) => {
            state.live.changes().tick();
            tracing::info!(study_id = %created.study_id, by = %token.name, "study from the form");
            Ok(Redirect::to(&format!("/studies/{}", created.study_id)).into_response())
        }
        Err(StudyError::Invalid(errors)) => refused(&page(
            &state,
            &headers,
            form.document,
            field_errors(errors),
            None,
        )),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefilled_documents_are_valid_studies() {
        for doc in [EXAMPLE, WAVE_MAE_DOC] {
            let study = check(doc, 200).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    e.iter()
                        .map(|e| format!("{}: {}", e.field, e.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            });
            assert!(study.run_count() > 0);
        }
        assert_eq!(check(EXAMPLE, 200).map(|s| s.run_count()).ok(), Some(8));
    }

    #[test]
    fn errors_name_their_field() {
        let bad = EXAMPLE.replace("wave_in = \"both\"", "wave_in = \"everywhere\"");
        let errors = check(&bad, 200).err().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e.field.starts_with("arms.wave-both.wave_in")),
            "{:?}",
            errors.iter().map(|e| &e.field).collect::<Vec<_>>()
        );
        let errors = check("name = ", 200).err().unwrap_or_default();
        assert_eq!(errors.first().map(|e| e.field.as_str()), Some("document"));
    }
}
