//! The runs table: filters, sort by any column, text search, pages of 50,
//! and live rows (the list stream adds new runs and moves status and epochs).

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{PageError, PageQuery, Reader, render};
use crate::format::human_duration;
use crate::http::AppState;
use crate::read_model::runs::list_runs;
use crate::read_model::{RunFilter, RunSort, RunSummary, SortOrder};

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

/// The deepest page ever queried (five million runs in), so the offset of
/// `?page=999999999999999999` never overflows.
pub const MAX_PAGE: i64 = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(list))
        .route("/runs/events", get(events))
}

/// The table's query string.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ListQuery {
    pub status: String,
    pub model: String,
    pub kind: String,
    pub tag: String,
    pub q: String,
    pub sort: String,
    pub dir: String,
    pub page: Option<i64>,
}

/// Sortable columns: the URL name, the header and the read model's sort key.
const COLUMNS: [(&str, &str, RunSort); 10] = [
    ("status", "Status", RunSort::Status),
    ("name", "Name", RunSort::Name),
    ("model", "Model", RunSort::Model),
    ("kind", "Kind", RunSort::Kind),
    ("preset", "Preset", RunSort::Preset),
    ("epochs", "Epochs", RunSort::EpochsDone),
    ("top1", "Best top-1", RunSort::BestAcc1),
    ("loss", "Last loss", RunSort::LastLoss),
    ("duration", "Duration", RunSort::Duration),
    ("worker", "Worker", RunSort::Worker),
];

/// A column header: its label, the link that sorts by it, and the arrow.
pub struct Header {
    pub label: &'static str,
    pub href: String,
    pub arrow: &'static str,
}

/// A row as the template prints it.
pub struct Line {
    pub run: RunSummary,
    pub duration: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    query: ListQuery,
    headers: Vec<Header>,
    lines: Vec<Line>,
    total: i64,
    page: i64,
    pages: i64,
    prev_href: Option<String>,
    next_href: Option<String>,
    statuses: [&'static str; 5],
    /// New runs are inserted live only where they would show: page 1, newest first, no filter.
    live_insert: bool,
}

fn href(q: &ListQuery) -> String {
    match serde_urlencoded::to_string(q) {
        Ok(s) => format!("/runs?{s}"),
        Err(_) => "/runs".to_string(),
    }
}

impl ListQuery {
    /// The read model's filter for page `page` (1-based) of this query; empty
    /// fields filter nothing, an unknown sort column sorts newest first.
    fn filter(&self, page: i64) -> RunFilter {
        let text = |s: &str| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        };
        RunFilter {
            status: text(&self.status),
            model: text(&self.model),
            kind: text(&self.kind),
            tag: text(&self.tag),
            q: text(&self.q),
            sort: COLUMNS
                .iter()
                .find(|(name, _, _)| *name == self.sort)
                .map(|(_, _, sort)| *sort),
            order: Some(if self.dir == "asc" {
                SortOrder::Asc
            } else {
                SortOrder::Desc
            }),
            limit: Some(PAGE_SIZE),
            offset: Some((page - 1).saturating_mul(PAGE_SIZE)),
        }
    }
}

async fn list(
    _: Reader,
    State(state): State<AppState>,
    PageQuery(query): PageQuery<ListQuery>,
) -> Result<Response, PageError> {
    let asked = query.page.unwrap_or(1);
    let page = asked.clamp(1, MAX_PAGE);
    let found = list_runs(&state.db, &query.filter(page)).await?;
    let (runs, total) = (found.runs, found.total);
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    // A page below 1 or past the last is clamped: sent to the nearest page.
    let nearest = asked.clamp(1, pages);
    if nearest != asked {
        let mut q = query.clone();
        q.page = Some(nearest);
        return Ok(Redirect::to(&href(&q)).into_response());
    }
    let headers = COLUMNS
        .iter()
        .map(|(name, label, _)| {
            let active = query.sort == *name;
            let mut q = query.clone();
            q.sort = (*name).to_string();
            q.dir = if active && query.dir != "asc" {
                "asc".into()
            } else {
                "desc".into()
            };
            q.page = None;
            Header {
                label,
                href: href(&q),
                arrow: match (active, query.dir == "asc") {
                    (false, _) => "",
                    (true, true) => " ▲",
                    (true, false) => " ▼",
                },
            }
        })
        .collect();
    let page_href = |p: i64| {
        let mut q = query.clone();
        q.page = Some(p);
        href(&q)
    };
    let live_insert = page == 1
        && query.sort.is_empty()
        && query.q.is_empty()
        && query.status.is_empty()
        && query.model.is_empty()
        && query.kind.is_empty()
        && query.tag.is_empty();
    let lines = runs
        .into_iter()
        .map(|run| Line {
            duration: run
                .duration_seconds
                .map(|s| human_duration(s as i64))
                .unwrap_or_default(),
            run,
        })
        .collect();
    render(&RunsPage {
        headers,
        lines,
        total,
        page,
        pages,
        prev_href: (page > 1).then(|| page_href(page - 1)),
        next_href: (page < pages).then(|| page_href(page + 1)),
        statuses: ["queued", "running", "succeeded", "failed", "cancelled"],
        live_insert,
        query,
    })
}

async fn events(_: Reader, State(state): State<AppState>) -> impl IntoResponse {
    crate::live::list_events(&state.live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_becomes_the_read_models_filter() {
        let q = ListQuery {
            model: "wave_mae".into(),
            q: " run-1 ".into(),
            sort: "top1".into(),
            dir: "asc".into(),
            ..ListQuery::default()
        };
        let f = q.filter(3);
        assert_eq!(f.model.as_deref(), Some("wave_mae"));
        assert_eq!((f.status, f.kind, f.tag), (None, None, None));
        assert_eq!(f.q.as_deref(), Some("run-1"));
        assert_eq!(f.sort, Some(RunSort::BestAcc1));
        assert_eq!(f.order, Some(SortOrder::Asc));
        assert_eq!((f.limit, f.offset), (Some(PAGE_SIZE), Some(2 * PAGE_SIZE)));
        let unknown = ListQuery {
            sort: "name;drop table run".into(),
            ..ListQuery::default()
        };
        assert_eq!(unknown.filter(1).sort, None);
        assert_eq!(unknown.filter(1).order, Some(SortOrder::Desc));
    }
}
