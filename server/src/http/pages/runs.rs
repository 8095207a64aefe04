//! The runs table: filters, sort by any column, text search, pages of 50,
//! and live rows (the list stream adds new runs and moves status and epochs).

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::rows::{RUN_ROW_SELECT, RunRow, run_row_select_from};
use super::{PageError, Reader, human_duration, render};
use crate::http::AppState;

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

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

/// Sortable columns: the URL name, the header and the SQL it sorts by.
const COLUMNS: [(&str, &str, &str); 10] = [
    ("status", "Status", "r.status::text"),
    ("name", "Name", "r.name"),
    ("model", "Model", "r.model"),
    ("kind", "Kind", "r.kind::text"),
    ("preset", "Preset", "r.preset"),
    ("epochs", "Epochs", "r.epochs_done"),
    ("top1", "Best top-1", "r.best_acc1"),
    ("loss", "Last loss", "r.last_train_loss"),
    (
        "duration",
        "Duration",
        "coalesce(r.finished_at, now()) - r.started_at",
    ),
    ("worker", "Worker", "w.name"),
];

/// A column header: its label, the link that sorts by it, and the arrow.
pub struct Header {
    pub label: &'static str,
    pub href: String,
    pub arrow: &'static str,
}

/// A row as the template prints it.
pub struct Line {
    pub run: RunRow,
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

/// `%` and `_` match themselves in a search.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// One page of runs and the number of runs that match.
pub async fn query_runs(
    db: &sqlx::PgPool,
    q: &ListQuery,
    page: i64,
) -> Result<(Vec<RunRow>, i64), sqlx::Error> {
    let order = COLUMNS
        .iter()
        .find(|(name, _, _)| *name == q.sort)
        .map_or("r.created_at", |(_, _, sql)| sql);
    let dir = if q.dir == "asc" { "asc" } else { "desc" };
    let filter = "where ($1 = '' or r.status::text = $1) and ($2 = '' or r.model = $2)
          and ($3 = '' or r.kind::text = $3) and ($4 = '' or $4 = any(r.tags))
          and ($5 = '' or r.name ilike $6 or starts_with(r.run_id::text, lower($5))
               or r.preset ilike $6)";
    let order_by = format!("order by {order} {dir} nulls last, r.created_at desc, r.run_id");
    // Sorted by a column of `run` itself (epoch summaries included): page
    // first, join 50 runs with their job and worker after.
    let sql = if order.contains("w.") {
        format!("{RUN_ROW_SELECT} {filter} {order_by} limit $7 offset $8")
    } else {
        let page = format!("(select * from run r {filter} {order_by} limit $7 offset $8)");
        format!("{} {order_by}", run_row_select_from(&page))
    };
    let pattern = like_pattern(q.q.trim());
    let rows = sqlx::query_as::<_, RunRow>(&sql)
        .bind(&q.status)
        .bind(&q.model)
        .bind(&q.kind)
        .bind(&q.tag)
        .bind(q.q.trim())
        .bind(&pattern)
        .bind(PAGE_SIZE)
        .bind((page - 1) * PAGE_SIZE)
        .fetch_all(db)
        .await?;
    let total: i64 = sqlx::query_scalar(&format!("select count(*) from run r {filter}"))
        .bind(&q.status)
        .bind(&q.model)
        .bind(&q.kind)
        .bind(&q.tag)
        .bind(q.q.trim())
        .bind(&pattern)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

async fn list(
    _: Reader,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let page = query.page.unwrap_or(1).max(1);
    let (runs, total) = query_runs(&state.db, &query, page).await?;
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
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
                .duration_seconds()
                .map(human_duration)
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
    use super::like_pattern;

    #[test]
    fn search_wildcards_are_literal() {
        assert_eq!(like_pattern("a%b_c"), "%a\\%b\\_c%");
    }
}
