//! The browser pages: server-rendered askama templates, live over SSE
//! (`crate::live`). Each page is one module with its handlers; they share the
//! HTML error page and the same-origin check for form posts here.

mod compare;
mod form;
mod new_run;
mod queue;
pub(crate) mod rows;
mod run;
mod runs;

use askama::Template;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;

/// Every page route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(runs::router())
        .merge(new_run::router())
        .merge(run::router())
        .merge(compare::router())
        .merge(queue::router())
}

/// Why a page could not be shown; answered as an HTML page, never JSON.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// 404: the thing named in the URL does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// 400: the URL or form cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 403: a form post from another site.
    #[error("{0}")]
    Forbidden(String),
    /// 409: e.g. cancelling a finished run.
    #[error("{0}")]
    Conflict(String),
    /// 500: logged, shown generically.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("template error: {0}")]
    Render(#[from] askama::Error),
}

impl From<maelab_core::db::runs::RunError> for PageError {
    fn from(e: maelab_core::db::runs::RunError) -> Self {
        use maelab_core::db::runs::RunError;
        match e {
            RunError::NotFound(id) => Self::NotFound(format!("run {id}")),
            RunError::Conflict(m) => Self::Conflict(m),
            RunError::Invalid(errors) => Self::BadRequest(errors.to_string()),
            RunError::Db(e) => Self::Db(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{what} does not exist."),
            ),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Not possible now", m.clone()),
            Self::Db(_) | Self::Render(_) => {
                tracing::error!(error = %self, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "Something went wrong; the server log has the details.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            title: title.to_string(),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title.to_string()).into_response(),
        }
    }
}

/// Render a template into a 200 HTML answer.
fn render(page: &impl Template) -> Result<Response, PageError> {
    Ok(Html(page.render()?).into_response())
}

/// Form posts must come from this site: the browser's `Sec-Fetch-Site` or
/// `Origin` says where the form was. A request with neither (curl, tests) is
/// not a cross-site browser post and is let through.
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(PageError::Forbidden(
                "this form was posted from another site".into(),
            )),
        };
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return Ok(());
    };
    let origin_host = origin.split("://").nth(1).unwrap_or(origin);
    if origin_host == host {
        Ok(())
    } else {
        Err(PageError::Forbidden(
            "this form was posted from another site".into(),
        ))
    }
}

/// The 404 page for any URL no route knows.
pub async fn not_found() -> Response {
    PageError::NotFound("this page".into()).into_response()
}

/// Seconds as `1h 02m`, `3m 05s` or `12s`.
pub(crate) fn human_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m 05s");
        assert_eq!(human_duration(3720), "1h 02m");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(same_origin(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h).is_ok());
    }
}
