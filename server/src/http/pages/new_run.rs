//! The new-run form: every config field, defaults from the chosen kind, model
//! and preset, "clone this run", a picker of pretrain checkpoints for
//! finetunes, and the API's validation with each reason next to its field.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use maelab_core::config::{ConfigErrors, RunConfig};
use maelab_core::db::runs::{self, RunError};
use serde::Deserialize;
use uuid::Uuid;

use super::form::{self, FIELDS, Ty, Values};
use super::{PageError, PageQuery, Reader, csrf_value};
use crate::auth::{CsrfForm, Submit};
use crate::http::AppError;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/runs/new", get(show).post(submit))
}

/// One input as the template draws it.
pub struct FieldView {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub error: Option<String>,
    /// `text`, `number` or `select`.
    pub input: &'static str,
    /// For selects: (value, shown text).
    pub options: Vec<(String, String)>,
}

pub struct Group {
    pub title: &'static str,
    pub fields: Vec<FieldView>,
}

/// A finished (or checkpointed) pretrain run a finetune may start from.
#[derive(Debug, sqlx::FromRow)]
pub struct ParentChoice {
    pub run_id: Uuid,
    pub name: String,
    pub preset: String,
    pub model: String,
    pub status: String,
    pub epochs: Vec<i32>,
}

#[derive(Template)]
#[template(path = "new_run.html")]
struct NewRunPage {
    groups: Vec<Group>,
    general_error: Option<String>,
    parents: Vec<ParentChoice>,
    cloned_from: Option<Uuid>,
    /// Repeated in the form's hidden `csrf_token` field.
    csrf: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct NewQuery {
    kind: Option<String>,
    model: Option<String>,
    preset: Option<String>,
    clone: Option<String>,
}

/// Pretrain runs with at least one stored checkpoint, newest first.
async fn parents(db: &sqlx::PgPool) -> Result<Vec<ParentChoice>, sqlx::Error> {
    sqlx::query_as::<_, ParentChoice>(
        "select r.run_id, r.name, r.preset, r.model, r.status::text as status,
                array_agg(distinct a.epoch order by a.epoch) as epochs
         from run r join artifact a on a.run_id = r.run_id
              and a.kind = 'checkpoint' and a.epoch is not null
         where r.kind = 'pretrain'
         group by r.run_id order by r.created_at desc limit 200",
    )
    .fetch_all(db)
    .await
}

fn page(
    values: &Values,
    errors: &HashMap<String, String>,
    parents: Vec<ParentChoice>,
    cloned_from: Option<Uuid>,
    csrf: String,
) -> NewRunPage {
    let mut groups: Vec<Group> = Vec::new();
    for spec in &FIELDS {
        let value = values.get(spec.name).cloned().unwrap_or_default();
        let (input, mut options) = match spec.ty {
            Ty::Choice(choices) => (
                "select",
                choices
                    .iter()
                    .map(|c| {
                        let shown = if c.is_empty() { "—" } else { c };
                        ((*c).to_string(), shown.to_string())
                    })
                    .collect(),
            ),
            Ty::Bool => (
                "select",
                vec![
                    ("true".to_string(), "yes".to_string()),
                    ("false".to_string(), "no".to_string()),
                ],
            ),
            Ty::Whole | Ty::Number => ("number", Vec::new()),
            Ty::Text | Ty::Tags => ("text", Vec::new()),
        };
        if spec.name == "parent_run" {
            options = std::iter::once((String::new(), "— none —".to_string()))
                .chain(parents.iter().map(|p| {
                    (
                        p.run_id.to_string(),
                        format!("{} · {} · {} · {}", p.name, p.model, p.preset, p.status),
                    )
                }))
                .collect();
            // Keep a typed id that is not in the list (the form shows it as chosen).
            if !value.is_empty() && !options.iter().any(|(v, _)| *v == value) {
                options.push((value.clone(), value.clone()));
            }
        } else if input == "select" && !options.iter().any(|(v, _)| *v == value) {
            options.push((value.clone(), value.clone()));
        }
        let view = FieldView {
            name: spec.name,
            label: spec.label,
            error: errors.get(spec.name).cloned(),
            input: if spec.name == "parent_run" {
                "select"
            } else {
                input
            },
            options,
            value,
        };
        match groups.last_mut() {
            Some(g) if g.title == spec.group => g.fields.push(view),
            _ => groups.push(Group {
                title: spec.group,
                fields: vec![view],
            }),
        }
    }
    NewRunPage {
        groups,
        general_error: errors.get("").cloned(),
        parents,
        cloned_from,
        csrf,
    }
}

/// Defaults for the chosen kind, model and preset (the preset and the kind's
/// recipe fill every field), or a cloned run's config.
async fn show(
    _: Reader,
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NewQuery>,
) -> Result<Response, PageError> {
    let csrf = csrf_value(&headers);
    let mut cloned_from = None;
    let values = if let Some(id) = q.clone.as_deref().filter(|s| !s.is_empty()) {
        let run_id = Uuid::parse_str(id).map_err(|_| PageError::NotFound(format!("run {id}")))?;
        let view = runs::get_run(&state.db, run_id)
            .await?
            .ok_or_else(|| PageError::NotFound(format!("run {run_id}")))?;
        let config: RunConfig = serde_json::from_value(view.config).map_err(|e| {
            PageError::BadRequest(format!(
                "run {run_id} has a config this version cannot read: {e}"
            ))
        })?;
        cloned_from = Some(run_id);
        form::values_of(&config.to_input())
    } else {
        let mut values: Values = Values::new();
        for (k, v) in [
            ("kind", &q.kind),
            ("model", &q.model),
            ("preset", &q.preset),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                values.insert(k.to_string(), v.clone());
            }
        }
        let (doc, _) = form::to_document(&values);
        match RunConfig::from_json_value(doc) {
            Ok(config) => form::values_of(&config.to_input()),
            // An unknown preset or kind in the URL: show it with its reason.
            Err(errors) => {
                let parents = parents(&state.db).await?;
                let errs = form::errors_by_field(&errors);
                return Ok(
                    Html(page(&values, &errs, parents, None, csrf).render()?).into_response()
                );
            }
        }
    };
    let parents = parents(&state.db).await?;
    Ok(Html(page(&values, &HashMap::new(), parents, cloned_from, csrf).render()?).into_response())
}

/// Validate like the API; on success queue the run and go to its page, else
/// show the form again as typed with the reasons.
async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    post: Result<CsrfForm<Vec<(String, String)>, Submit>, AppError>,
) -> Result<Response, PageError> {
    let CsrfForm { token, form, .. } = post?;
    let values: Values = form.into_iter().collect();
    let (doc, type_errors) = form::to_document(&values);
    let result = match RunConfig::from_json_value(doc) {
        Ok(config) if type_errors.is_empty() => {
            runs::create_run(&state.db, &config, Some(&token.name))
                .await
                .map_err(|e| match e {
                    RunError::Invalid(errors) => Ok(errors),
                    other => Err(other),
                })
        }
        Ok(_) => Err(Ok(ConfigErrors(type_errors))),
        Err(mut errors) => {
            let mut all = type_errors;
            all.append(&mut errors.0);
            // Fields already rejected for their type add nothing from resolve.
            Err(Ok(ConfigErrors(all)))
        }
    };
    match result {
        Ok(created) => {
            state.live.changes().tick();
            Ok(Redirect::to(&format!("/runs/{}", created.run_id)).into_response())
        }
        Err(Ok(errors)) => {
            let parents = parents(&state.db).await?;
            let errs = form::errors_by_field(&errors);
            let html = page(&values, &errs, parents, None, csrf_value(&headers)).render()?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
        }
        Err(Err(other)) => Err(other.into()),
    }
}
